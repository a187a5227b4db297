"""TensorFlow family, what only it has: NHWC artefacts, the GraphDef through the CLI from another folder, the TFLite
carrier (a zip appended to the flatbuffer) and its LiteRT input types, the Edge TPU compiler and runtime messages,
the names that tell the formats apart. Export, parity, reload, predict and metadata: ``test_contract.py``, whose
exports (one onnx2tf conversion per model) these tests share on the same worker.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import needs
from yolo_export import YOLO, registry
from yolo_export.errors import ArgumentError, NotAvailable

pytestmark = [needs("tensorflow", "onnx2tf", "tf_keras", "onnx", "onnxruntime", "ai_edge_litert", extra="tensorflow"),
              pytest.mark.xdist_group("tensorflow")]


def leftovers(d: Path):
    return sorted(p.name for p in d.iterdir() if ".tmp-" in p.name or p.name.endswith(("-tmp", ".part")))


def test_saved_model_takes_nhwc_and_fetched_nothing(exported):
    import tensorflow as tf

    row = exported("saved_model")
    row.need()
    assert (row.path / "saved_model.pb").is_file() and (row.path / "metadata.yaml").is_file()
    spec = tf.saved_model.load(str(row.path)).signatures["serving_default"].structured_input_signature[1]
    assert list(next(iter(spec.values())).shape) == [1, 32, 32, 3]
    # onnx2tf's sample download was never needed (nothing fetched or left in the working directory)
    assert not list(Path.cwd().glob("calibration_image_sample_data_*.npy"))


def test_graphdef_through_the_cli_with_relative_paths(exported, cli, monkeypatch, tmp_path):
    row = exported("pb")               # the same model: its SavedModel conversion is reused in this process
    row.need()
    shutil.copy(row.source, tmp_path / "m.pt")
    monkeypatch.chdir(tmp_path)        # relative paths through the CLI, as a user types them
    code, out, err = cli("m.pt", "--format", "pb", "--json")
    assert code == 0, out + err
    m = YOLO(tmp_path / "m.pb")
    par = m.metadata["verification"]
    assert par["status"] == "passed" and par["max_abs_diff"] <= 1e-4 and par["top1_agreement"] == 1.0
    assert m.format == "pb" and m.metadata["preprocess"]["layout"] == "NHWC"
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    assert np.abs(m.backend().run(x) - YOLO(row.path).backend().run(x)).max() <= 1e-6
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("prec,dtype", [("fp32", np.float32), ("fp16", np.float32), ("int8", np.int8)])
def test_tflite_carrier_and_litert_input(exported, prec, dtype):
    from ai_edge_litert.interpreter import Interpreter

    row = exported("tflite", prec)
    row.need()
    assert row.path.name == {"fp32": "m.tflite", "fp16": "m_float16.tflite", "int8": "m_int8.tflite"}[prec]
    with zipfile.ZipFile(row.path) as z:   # metadata embedded: a zip appended to the flatbuffer, which still runs
        assert "metadata.json" in z.namelist()
    it = Interpreter(model_path=str(row.path))
    inp = it.get_input_details()[0]
    assert list(inp["shape"]) == [1, 32, 32, 3] and inp["dtype"] == dtype
    if prec == "int8":                     # dequantised probabilities
        out = [r.probs.data for r in YOLO(row.path)(row.folder)]
        assert all(abs(float(o.sum()) - 1) < 0.05 for o in out)


def test_edgetpu_needs_its_compiler(exported, pt_copy):
    """Without edgetpu_compiler the row skips naming how to install it (refused before the INT8 TFLite is built, which
    the tflite int8 rows test); with it, the compiled model is recognised as an Edge TPU artefact."""
    row = exported("edgetpu", "int8")   # the contract test checks the refusal is one line and nothing is left
    if shutil.which("edgetpu_compiler") is None:
        assert row.skip and "edgetpu_compiler" in row.skip and "apt-get install edgetpu-compiler" in row.skip
    else:
        row.need()
        assert row.path.name == "m_edgetpu.tflite" and registry.for_path(row.path).name == "edgetpu"
    with pytest.raises(ArgumentError, match="--half"):
        YOLO(pt_copy).export("edgetpu", half=True)


def test_edgetpu_runtime_message(tmp_path):
    from yolo_export.autobackend import AutoBackend

    if registry.get("edgetpu").runtime_available()[0]:
        pytest.skip("an Edge TPU runtime is installed here")
    fake = tmp_path / "m_edgetpu.tflite"
    fake.write_bytes(b"\0" * 16)
    with pytest.raises(NotAvailable, match="libedgetpu"):
        AutoBackend(fake)


def test_refused_arguments(pt_copy, cli):
    y = YOLO(pt_copy)
    for fmt, kw, word in [("saved_model", {"half": True}, "--half"), ("saved_model", {"int8": True}, "--int8"),
                          ("pb", {"dynamic": True}, "--dynamic"), ("tflite", {"half": True, "int8": True}, "one of"),
                          ("tflite", {"dynamic": True}, "--dynamic")]:
        with pytest.raises(ArgumentError, match=word):
            y.export(fmt, **kw)
    code, out, err = cli(pt_copy, "--format", "tflite", "--half", "--int8")
    assert code != 0 and "--half" in (out + err)
    assert leftovers(pt_copy.parent) == []


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
