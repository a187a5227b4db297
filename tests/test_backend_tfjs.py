"""TF.js: SavedModel -> graph model (fp32 / fp16 weights), run through the shipped Node.js runner.

Where Node or the npm packages are missing, the export still runs for real (verification is recorded as skipped)
and prediction must fail with one line naming the command to run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import needs
from tf_common import spread_checkpoint

from yolo_export import YOLO
from yolo_export.errors import ArgumentError, NotAvailable

pytestmark = needs("tensorflow", "onnx2tf", "tensorflowjs", "tensorflow_hub", "jax", extra="tfjs")


def node_ok():
    from yolo_export.backends.tfjs import node_status

    return node_status()


needs_node = pytest.mark.skipif(not node_ok()[0], reason=f"TF.js runner unavailable: {node_ok()[1]}")


@pytest.fixture(scope="module")
def js_dir(tiny_yolo, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tfjs")
    spread_checkpoint(tiny_yolo, d / "tiny.pt")
    return d


@pytest.fixture(scope="module")
def web_model(js_dir):
    y = YOLO(js_dir / "tiny.pt")
    path = Path(y.export("tfjs"))
    return path, y.last_export


def test_tfjs_export_files_and_metadata(web_model):
    path, res = web_model
    assert path.name == "tiny_web_model" and (path / "model.json").is_file()
    mj = json.loads((path / "model.json").read_text())
    assert mj["format"] == "graph-model" and list(mj["signature"]["inputs"].values())[0]["tensorShape"]["dim"][3] == {
        "size": "3"}                                                     # NHWC input
    shards = [p for g in mj["weightsManifest"] for p in g["paths"]]
    assert shards and all((path / s).is_file() for s in shards)
    assert "names" in mj["userDefinedMetadata"]["yolo_export"]
    from yolo_export import registry

    meta = registry.get("tfjs").read_metadata(path)
    assert meta["names"][0] == "c0" and meta["preprocess"]["layout"] == "NHWC" and meta["imgsz"] == [32, 32]
    if node_ok()[0]:
        assert res.parity["status"] == "passed"
    else:
        assert res.parity["status"] == "skipped"


@needs_node
def test_tfjs_fp32_parity_and_predict(web_model, js_dir, images):
    path, res = web_model
    par = res.parity
    assert par["max_abs_diff"] <= 1e-4 and par["top1_agreement"] == 1.0 and par["decisive"] >= 4
    assert par["threads"] == 1                     # what the runner reports: the bundled wasm binary's one thread
    ref = [r.probs.data for r in YOLO(js_dir / "tiny.pt")(images)]
    m = YOLO(path)
    out = [r.probs.data for r in m(images)]          # 4 images, fixed batch 1: four round trips to one process
    assert m.format == "tfjs"
    assert [int(o.argmax()) for o in out] == [int(r.argmax()) for r in ref]
    assert max(float(np.abs(o - r).max()) for o, r in zip(out, ref)) <= 1e-4


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


@needs_node
def test_tfjs_fp16(js_dir):
    y = YOLO(js_dir / "tiny.pt")
    path = Path(y.export("tfjs", half=True, output=str(js_dir / "half_web_model")))
    par = y.last_export.parity
    assert par["status"] == "passed" and par["max_abs_diff"] <= 1e-2 and par["top1_agreement"] == 1.0
    assert sum(f.stat().st_size for f in path.glob("*.bin")) < 0.6 * sum(
        f.stat().st_size for f in (js_dir / "tiny_web_model").glob("*.bin"))


def test_no_node_modules_is_one_clear_line(web_model, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_EXPORT_NODE_PATH", str(tmp_path / "empty"))
    with pytest.raises(NotAvailable) as e:
        YOLO(web_model[0])(np.zeros((32, 32, 3), np.uint8))
    msg = str(e.value)
    assert "\n" not in msg and "npm install --prefix" in msg and "@tensorflow/tfjs-core" in msg


def test_tfjs_refuses(js_dir):
    y = YOLO(js_dir / "tiny.pt")
    with pytest.raises(ArgumentError):
        y.export("tfjs", half=True, int8=True)
    with pytest.raises(ArgumentError, match="--dynamic"):
        y.export("tfjs", dynamic=True)
