"""MNN: ONNX -> .mnn with MNN's converter (fp32 / fp16 weights / 8-bit weights), run in MNN's runtime, compared with
PyTorch; metadata in ``bizCode``; and proof that an export installs and fetches nothing."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from backend_models import cond_pt, conditioned_master, result_probs, torch_probs  # noqa: F401
from conftest import needs
from yolo_export import YOLO, registry
from yolo_export.errors import ArgumentError
from yolo_export.verify import check_inputs

mnn_only = needs("MNN", "_tools", "onnx", "onnxruntime", extra="mnn")


@pytest.fixture(scope="module")
def mnn_fp32(conditioned_master, tmp_path_factory):  # noqa: F811
    import shutil

    d = tmp_path_factory.mktemp("mnn")
    pt = Path(shutil.copy(conditioned_master, d / "cond.pt"))
    y = YOLO(pt)
    path = Path(y.export("mnn"))
    return pt, path, y.last_export


@mnn_only
def test_mnn_fp32_parity_predict_and_bizcode_metadata(mnn_fp32, images):
    pt, path, res = mnn_fp32
    assert path.name == "cond.mnn" and path.is_file()
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name or "meta-tmp" in p.name]
    par = res.parity
    assert par["status"] == "passed" and par["decisive"] == par["n"] == 8
    assert par["max_abs_diff"] <= 1e-4 and par["top1_agreement"] == 1.0

    m = YOLO(path)
    assert m.format == "mnn" and m.names == YOLO(pt).names and m.imgsz == 32
    a, b = YOLO(pt)(images), m(images, batch=3)
    assert [r.probs.top1 for r in a] == [r.probs.top1 for r in b]
    assert np.abs(result_probs(a) - result_probs(b)).max() <= 1e-4

    # the carrier: MNN's own bizCode field, read with MNN's API (the verification was written after export)
    import MNN

    raw = json.loads(MNN.nn.load_module_from_file(str(path), [], []).get_info()["bizCode"])
    assert raw["task"] == "classify" and json.loads(raw["verification"])["status"] == "passed"
    assert m.metadata["verification"]["max_abs_diff"] == par["max_abs_diff"]
    assert m.metadata["preprocess"]["layout"] == "NCHW"


@mnn_only
@pytest.mark.parametrize("kw,ratio", [({"half": True}, 0.55), ({"int8": True}, 0.30)])
def test_mnn_half_and_int8_weights(mnn_fp32, kw, ratio, tmp_path):
    pt, fp32, _ = mnn_fp32
    out = tmp_path / f"cond_{next(iter(kw))}.mnn"
    # the conditioned random model is far more sensitive to weight rounding than a trained one (its fp16-weight
    # PyTorch twin already moves probabilities by 2e-2), so parity is judged here on top-1 over 64 inputs
    path = Path(YOLO(pt).export("mnn", output=str(out), verify=False, **kw))
    assert path.stat().st_size < ratio * fp32.stat().st_size
    m = YOLO(path)
    assert m.metadata["args"].get(next(iter(kw))) is True
    x = check_inputs(32, 64, seed=3)
    ref, got = torch_probs(pt, x), m.backend().run(x)
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    print(f"mnn {kw}: top-1 agreement {agree:.1%} on 64 inputs, max prob diff {np.abs(ref - got).max():.3g}, "
          f"{path.stat().st_size / 1e6:.2f} MB vs {fp32.stat().st_size / 1e6:.2f} MB fp32")
    assert agree >= 0.9


@mnn_only
def test_mnn_dynamic_batch_and_argument_errors(mnn_fp32, tmp_path):
    pt, _, _ = mnn_fp32
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
socket.socket.connect = _deny
socket.socket.connect_ex = _deny
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
    pt, _, _ = mnn_fp32
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
