"""TF.js, what only it has: the graph-model files, the Node.js runner process, quantised weight sizes, and one line
naming the command to run where Node or its npm packages are missing (the export still runs for real, verification
recorded as skipped). Export, parity, reload, predict and metadata: ``test_contract.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import needs

from yolo_export import YOLO
from yolo_export.errors import ArgumentError, NotAvailable

pytestmark = [needs("tensorflow", "onnx2tf", "tensorflowjs", "tensorflow_hub", "jax", extra="tfjs"),
              pytest.mark.xdist_group("tfjs")]   # the contract test's exports of tfjs, on the same worker


def node_ok():
    from yolo_export.backends.tfjs import node_status

    return node_status()


needs_node = pytest.mark.skipif(not node_ok()[0], reason=f"TF.js runner unavailable: {node_ok()[1]}")


@pytest.fixture()
def web_model(exported):
    row = exported("tfjs")
    row.need()
    return row.path, row


def test_tfjs_export_files_and_metadata(web_model):
    path, row = web_model
    mj = json.loads((path / "model.json").read_text())
    assert mj["format"] == "graph-model" and list(mj["signature"]["inputs"].values())[0]["tensorShape"]["dim"][3] == {
        "size": "3"}                                                     # NHWC input
    shards = [p for g in mj["weightsManifest"] for p in g["paths"]]
    assert shards and all((path / s).is_file() for s in shards)
    assert "names" in mj["userDefinedMetadata"]["yolo_export"]
    assert row.parity["status"] == ("passed" if node_ok()[0] else "skipped")
    if node_ok()[0]:
        assert row.parity["threads"] == 1            # what the runner reports: the bundled wasm binary's one thread


@needs_node
def test_tfjs_runner_batches(web_model):
    from yolo_export.backends.tfjs import NodeRunner

    r = NodeRunner(web_model[0])
    try:
        x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
        a, b = r(x), r(x)
        assert a.shape == (1, 10) and np.array_equal(a, b) and abs(float(a.sum()) - 1) < 1e-4
        assert r.fixed_batch == 1
    finally:
        r.close()
    assert r.proc.poll() is not None                # the node process is gone


@pytest.mark.parametrize("prec,ratio", [("fp16", 0.6), ("int8", 0.35)])
def test_tfjs_quantised_weights_are_smaller(web_model, exported, prec, ratio):
    row = exported("tfjs", prec)       # parity within the declared tolerance: test_contract.py
    row.need()
    assert sum(f.stat().st_size for f in row.path.glob("*.bin")) < ratio * sum(
        f.stat().st_size for f in web_model[0].glob("*.bin"))


def test_no_node_modules_is_one_clear_line(web_model, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_EXPORT_NODE_PATH", str(tmp_path / "empty"))
    with pytest.raises(NotAvailable) as e:
        YOLO(web_model[0])(np.zeros((32, 32, 3), np.uint8))
    msg = str(e.value)
    assert "\n" not in msg and "npm install --prefix" in msg and "@tensorflow/tfjs-core" in msg


def test_tfjs_refuses(pt_copy):
    y = YOLO(pt_copy)
    with pytest.raises(ArgumentError):
        y.export("tfjs", half=True, int8=True)
    with pytest.raises(ArgumentError, match="--dynamic"):
        y.export("tfjs", dynamic=True)
