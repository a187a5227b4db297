"""MNN, what only it has: the ``bizCode`` carrier, fp16 / 8-bit weight sizes, a dynamic batch, and proof that an
export installs and fetches nothing (MNN's Python converter would pip install). Export, parity, reload, predict and
metadata round trip: ``test_contract.py``."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from backend_models import torch_probs
from conftest import needs
from yolo_export import YOLO, registry
from yolo_export.errors import ArgumentError
from yolo_export.data.samples import check_inputs

pytestmark = pytest.mark.xdist_group("mnn")   # the contract test's exports of mnn, on the same worker
mnn_only = needs("MNN", "_tools", "onnx", "onnxruntime", extra="mnn")


@pytest.fixture()
def mnn_fp32(exported):
    row = exported("mnn")
    row.need()
    return row.source, row.path


@mnn_only
def test_mnn_bizcode_carrier(mnn_fp32):
    """The carrier: MNN's own bizCode field, read with MNN's API (the verification was written after export)."""
    import MNN

    _, path = mnn_fp32
    raw = json.loads(MNN.nn.load_module_from_file(str(path), [], []).get_info()["bizCode"])
    assert raw["task"] == "classify" and json.loads(raw["verification"])["status"] == "passed"
    assert YOLO(path).metadata["preprocess"]["layout"] == "NCHW"


@mnn_only
@pytest.mark.parametrize("prec,flag,ratio", [("fp16", "half", 0.55), ("int8", "int8", 0.30)])
def test_mnn_half_and_int8_weights_are_smaller(mnn_fp32, exported, prec, flag, ratio):
    row = exported("mnn", prec)   # parity within the declared tolerance: test_contract.py
    row.need()
    fp32 = mnn_fp32[1]
    assert row.path.stat().st_size < ratio * fp32.stat().st_size
    assert YOLO(row.path).metadata["args"].get(flag) is True


@mnn_only
def test_mnn_dynamic_batch_and_argument_errors(mnn_fp32, tmp_path):
    pt, _ = mnn_fp32
    path = YOLO(pt).export("mnn", dynamic=True, output=str(tmp_path / "dyn.mnn"))
    ab = YOLO(path).backend()
    assert ab.dynamic and ab.fixed_batch is None
    x = check_inputs(32, 5, seed=7)
    out = ab.runner(x)  # one call with a batch of 5
    assert out.shape == (5, 10) and np.abs(out - torch_probs(pt, x)).max() <= 1e-4
    with pytest.raises(ArgumentError, match="choose one of --half and --int8"):
        YOLO(pt).export("mnn", half=True, int8=True)
    with pytest.raises(ArgumentError, match="does not take --opset"):
        YOLO(pt).export("mnn", opset=12)
    assert registry.get("mnn").builds_on == "onnx"


GUARD = '''
import os, socket
_log = os.environ["YX_GUARD_LOG"]
def _deny(*a, **k):
    with open(_log, "a") as f:
        f.write("network %r\\n" % (a[1:] if a else a,))
    raise OSError("network disabled in this test")
def _local_only(original):
    # a Unix socket is no network (multiprocessing talks to its fork server through one)
    def connect(self, *a, **k):
        if self.family == socket.AF_UNIX:
            return original(self, *a, **k)
        return _deny(self, *a, **k)
    return connect
socket.socket.connect = _local_only(socket.socket.connect)
socket.socket.connect_ex = _local_only(socket.socket.connect_ex)
socket.create_connection = _deny
socket.getaddrinfo = _deny
'''

FAKE_PIP = '''#!/bin/sh
echo "pip $*" >> "$YX_GUARD_LOG"
exit 1
'''


def _guarded_env(tmp_path: Path) -> dict:
    """An environment where any pip run and any network attempt (from Python, in any child) is logged and refused."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(textwrap.dedent(GUARD))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("pip", "pip3", f"pip3.{sys.version_info.minor}"):
        (bindir / name).write_text(FAKE_PIP)
        (bindir / name).chmod(0o755)
    env = dict(os.environ)
    env.update(PATH=f"{bindir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
               PYTHONPATH=f"{guard}{os.pathsep}{env.get('PYTHONPATH', '')}", PIP_NO_INDEX="1",
               YX_GUARD_LOG=str(tmp_path / "guard.log"), YOLO_EXPORT_NO_PLUGINS="1")
    return env


def _dists() -> set[str]:
    from importlib.metadata import distributions

    return {d.metadata["Name"].lower() for d in distributions()}


@mnn_only
def test_mnn_export_installs_and_fetches_nothing(mnn_fp32, tmp_path):
    pt, _ = mnn_fp32
    env = _guarded_env(tmp_path)
    log = Path(env["YX_GUARD_LOG"])

    # control: the MNN package's Python converter module does try to pip install at import, and the guard sees it
    r = subprocess.run([sys.executable, "-c", "import MNN.tools"], env=env, capture_output=True, text=True)
    assert "pip install" in log.read_text(), r.stdout + r.stderr
    log.unlink()

    before = _dists()
    out = tmp_path / "guarded.mnn"
    r = subprocess.run([sys.executable, "-m", "yolo_export", str(pt), "--format", "mnn", "--int8", "-o", str(out),
                        "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)  # MNN's C++ banners went to stderr: stdout is exactly one JSON document
    assert doc["format"] == "mnn" and doc["parity"]["status"] == "passed" and out.is_file()
    assert not log.exists(), log.read_text()  # no pip run, no network attempt
    assert _dists() == before
    import importlib.util

    assert importlib.util.find_spec("aliyun") is None
