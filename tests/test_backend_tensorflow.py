"""TensorFlow family: SavedModel, frozen GraphDef, TFLite fp32/fp16/INT8 and Edge TPU — real exports, real runs.

One onnx2tf conversion is shared by every export in this module: the SavedModel backend reuses, within a process,
the conversion of an identical ONNX graph, and all tests export the same tiny model (imgsz 32, batch 1).
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import needs
from tf_common import spread_checkpoint

from yolo_export import YOLO, registry
from yolo_export.errors import ArgumentError, NotAvailable

pytestmark = needs("tensorflow", "onnx2tf", "tf_keras", "onnx", "onnxruntime", "ai_edge_litert", extra="tensorflow")


def leftovers(d: Path):
    return sorted(p.name for p in d.iterdir() if ".tmp-" in p.name or p.name.endswith(("-tmp", ".part")))


@pytest.fixture(scope="module")
def tf_dir(tiny_yolo, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tf")
    spread_checkpoint(tiny_yolo, d / "tiny.pt")
    return d


@pytest.fixture(scope="module")
def ref(tf_dir, images):
    """The .pt's predictions on the image folder."""
    return [r.probs.data for r in YOLO(tf_dir / "tiny.pt")(images)]


@pytest.fixture(scope="module")
def saved_model(tf_dir):
    y = YOLO(tf_dir / "tiny.pt")
    path = y.export("saved_model")
    return Path(path), y.last_export


def check_predict(path, images, ref, tol):
    m = YOLO(path)
    out = [r.probs.data for r in m(images)]
    assert [int(o.argmax()) for o in out] == [int(r.argmax()) for r in ref]
    assert max(float(np.abs(o - r).max()) for o, r in zip(out, ref)) <= tol
    return m


def test_saved_model_export_parity_predict_metadata(saved_model, tf_dir, images, ref):
    path, res = saved_model
    assert path.name == "tiny_saved_model" and path.is_dir() and (path / "saved_model.pb").is_file()
    par = res.parity
    assert par["status"] == "passed" and par["max_abs_diff"] <= 1e-4 and par["top1_agreement"] == 1.0
    assert par["decisive"] >= 4           # the sharpened head makes the agreement figure meaningful
    m = check_predict(path, images, ref, 1e-4)
    assert m.format == "saved_model" and m.names == {i: f"c{i}" for i in range(10)} and m.imgsz == 32
    meta = m.metadata
    assert meta["preprocess"]["layout"] == "NHWC" and meta["verification"]["status"] == "passed"
    assert (path / "metadata.yaml").is_file()
    # the artefact really takes NHWC input
    import tensorflow as tf

    spec = tf.saved_model.load(str(path)).signatures["serving_default"].structured_input_signature[1]
    assert list(next(iter(spec.values())).shape) == [1, 32, 32, 3]
    assert leftovers(tf_dir) == []
    # onnx2tf's sample download was never needed (nothing fetched or left in the working directory)
    assert not list(Path.cwd().glob("calibration_image_sample_data_*.npy"))


def test_graphdef_export_parity_predict_metadata(saved_model, tf_dir, images, ref, cli, monkeypatch):
    monkeypatch.chdir(tf_dir)                     # relative paths through the CLI, as a user types them
    code, out, err = cli("tiny.pt", "--format", "pb", "--json")
    assert code == 0, out + err
    path = tf_dir / "tiny.pb"
    assert path.is_file()
    m = check_predict(path, images, ref, 1e-4)
    par = m.metadata["verification"]
    assert par["status"] == "passed" and par["max_abs_diff"] <= 1e-4 and par["top1_agreement"] == 1.0
    assert m.format == "pb" and m.metadata["preprocess"]["layout"] == "NHWC"


@pytest.mark.parametrize("kw,name,tol", [({}, "tiny.tflite", 1e-4), ({"half": True}, "tiny_float16.tflite", 1e-2),
                                         ({"int8": True, "calib": "synthetic"}, "tiny_int8.tflite", None)])
def test_tflite_export_parity_predict_metadata(saved_model, tf_dir, images, ref, kw, name, tol):
    y = YOLO(tf_dir / "tiny.pt")
    path = Path(y.export("tflite", **kw))
    assert path.name == name
    par = y.last_export.parity
    assert par["status"] == "passed"
    if tol is not None:
        assert par["max_abs_diff"] <= tol and par["top1_agreement"] == 1.0
    else:  # untrained model, generated calibration: the export gate's sanity floor; accuracy is checked on a
        # trained model in test_int8_trained.py
        assert par["top1_agreement_decisive"] >= 0.5
    # metadata is embedded (zip appended to the flatbuffer) and the file still runs in LiteRT
    with zipfile.ZipFile(path) as z:
        assert "metadata.json" in z.namelist()
    m = YOLO(path)
    assert m.format == "tflite" and m.names[3] == "c3" and m.metadata["preprocess"]["layout"] == "NHWC"
    assert m.metadata["args"].get("int8", False) == bool(kw.get("int8"))
    out = [r.probs.data for r in m(images)]
    if tol is not None:
        assert [int(o.argmax()) for o in out] == [int(r.argmax()) for r in ref]
        assert max(float(np.abs(o - r).max()) for o, r in zip(out, ref)) <= tol
    else:
        assert all(abs(float(o.sum()) - 1) < 0.05 for o in out)  # dequantised probabilities
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    inp = it.get_input_details()[0]
    assert list(inp["shape"]) == [1, 32, 32, 3]
    assert inp["dtype"] == (np.int8 if kw.get("int8") else np.float32)
    assert leftovers(tf_dir) == []


def test_edgetpu_builds_int8_then_needs_compiler(saved_model, tf_dir):
    y = YOLO(tf_dir / "tiny.pt")
    before = sorted(p.name for p in tf_dir.iterdir())
    if shutil.which("edgetpu_compiler") is None:
        with pytest.raises(NotAvailable) as e:
            y.export("edgetpu", calib="synthetic")
        msg = str(e.value)
        assert "\n" not in msg and "edgetpu_compiler" in msg and "apt-get install edgetpu-compiler" in msg
        assert sorted(p.name for p in tf_dir.iterdir()) == before        # nothing half-written
    else:
        path = Path(y.export("edgetpu", calib="synthetic"))
        assert path.name == "tiny_edgetpu.tflite" and registry.for_path(path).name == "edgetpu"
    with pytest.raises(ArgumentError, match="--half"):
        y.export("edgetpu", half=True)


def test_edgetpu_runtime_message(tmp_path):
    from yolo_export.autobackend import AutoBackend

    if registry.get("edgetpu").runtime_available()[0]:
        pytest.skip("an Edge TPU runtime is installed here")
    fake = tmp_path / "m_edgetpu.tflite"
    fake.write_bytes(b"\0" * 16)
    with pytest.raises(NotAvailable, match="libedgetpu"):
        AutoBackend(fake)


def test_refused_arguments(tf_dir, cli):
    y = YOLO(tf_dir / "tiny.pt")
    for fmt, kw, word in [("saved_model", {"half": True}, "--half"), ("saved_model", {"int8": True}, "--int8"),
                          ("pb", {"dynamic": True}, "--dynamic"), ("tflite", {"half": True, "int8": True}, "one of"),
                          ("tflite", {"dynamic": True}, "--dynamic")]:
        with pytest.raises(ArgumentError, match=word):
            y.export(fmt, **kw)
    code, out, err = cli(tf_dir / "tiny.pt", "--format", "tflite", "--half", "--int8")
    assert code != 0 and "--half" in (out + err)
    assert leftovers(tf_dir) == []


def test_paths_resolve_to_one_backend(tmp_path):
    (tmp_path / "a_saved_model").mkdir()
    (tmp_path / "b_web_model").mkdir()
    for n in ("a.pb", "a.tflite", "a_int8.tflite", "a_float16.tflite", "a_edgetpu.tflite"):
        (tmp_path / n).write_bytes(b"x")
    got = {n: registry.for_path(tmp_path / n).name for n in
           ("a_saved_model", "b_web_model", "a.pb", "a.tflite", "a_int8.tflite", "a_float16.tflite",
            "a_edgetpu.tflite")}
    assert got == {"a_saved_model": "saved_model", "b_web_model": "tfjs", "a.pb": "pb", "a.tflite": "tflite",
                   "a_int8.tflite": "tflite", "a_float16.tflite": "tflite", "a_edgetpu.tflite": "edgetpu"}
