"""Export to TorchScript and ONNX, parity against PyTorch, argument rules, and nothing half-written."""

from pathlib import Path

import numpy as np
import pytest
from conftest import needs

from yolo_export import YOLO, registry
from yolo_export.errors import ArgumentError, MissingDependency, VerificationError

onnx_only = needs("onnx", "onnxruntime", extra="onnx")


def leftovers(d: Path):
    return [p.name for p in d.iterdir() if ".tmp-" in p.name or p.name.endswith(("-tmp", ".part"))]


def test_torchscript_export_parity_and_metadata(pt_copy, images):
    y = YOLO(pt_copy)
    path = y.export("torchscript")
    assert path.endswith("tiny.torchscript")
    par = y.last_export.parity
    assert par["status"] == "passed" and par["max_abs_diff"] <= 1e-4 and par["top1_agreement"] == 1.0
    ts = YOLO(path)
    assert ts.format == "torchscript" and ts.names == y.names and ts.imgsz == 32
    assert ts.metadata["verification"]["status"] == "passed"
    a, b = y(images), ts(images)
    assert [r.probs.top1 for r in a] == [r.probs.top1 for r in b]
    assert max(np.abs(r.probs.data - s.probs.data).max() for r, s in zip(a, b)) <= 1e-4
    assert leftovers(pt_copy.parent) == []


@onnx_only
@pytest.mark.parametrize("dynamic", [False, True])
def test_onnx_fp32_parity(pt_copy, images, dynamic):
    y = YOLO(pt_copy)
    path = y.export("onnx", dynamic=dynamic, batch=4 if dynamic else 1)
    par = y.last_export.parity
    assert par["max_abs_diff"] <= 1e-4 and par["top1_agreement"] == 1.0
    o = YOLO(path)
    assert o.format == "onnx" and o.metadata["args"]["dynamic"] is dynamic
    a, b = y(images, batch=3), o(images, batch=3)  # batch 3 against a static batch-1 model: split by AutoBackend
    assert [r.probs.top1 for r in a] == [r.probs.top1 for r in b]
    assert max(np.abs(r.probs.data - s.probs.data).max() for r, s in zip(a, b)) <= 1e-4


@onnx_only
def test_onnx_single_file_no_external_data_and_metadata_props(pt_copy):
    import ast

    import onnx

    path = Path(YOLO(pt_copy).export("onnx", opset=13))
    assert not list(path.parent.glob("*.data")) and not list(path.parent.glob("*.onnx.data"))
    m = onnx.load(str(path))
    assert m.opset_import[0].version == 13
    props = {p.key: p.value for p in m.metadata_props}
    assert ast.literal_eval(props["names"])[0] == "c0"
    assert ast.literal_eval(props["imgsz"]) == [32, 32]
    assert not any(k.startswith("onnxsim") for k in props)
    assert m.graph.input[0].name == "images"


@onnx_only
def test_onnx_fp16_within_tolerance(trained_pt, tmp_path):
    # fp16 is judged on a trained model: an untrained one has no margins and amplifies weight rounding
    import shutil

    from yolo_export.data.datasets import resolve_dataset

    pt = tmp_path / "best.pt"
    shutil.copy(trained_pt, pt)
    y = YOLO(pt)
    path = y.export("onnx", half=True, data="digits")
    par = y.last_export.parity
    assert par["precision"] == "fp16" and par["max_abs_diff"] <= 1e-2 and par["top1_agreement"] >= 0.99
    fp32 = Path(YOLO(pt).export("onnx", output=str(tmp_path / "f.onnx")))
    assert Path(path).stat().st_size < 0.6 * fp32.stat().st_size
    val = sorted((resolve_dataset("digits") / "val").rglob("*.png"))[::6]
    a, b = y(val, batch=16), YOLO(path)(val, batch=16)
    assert max(np.abs(r.probs.data - s.probs.data).max() for r, s in zip(a, b)) <= 1e-2
    assert np.mean([r.probs.top1 == s.probs.top1 for r, s in zip(a, b)]) >= 0.99


def test_unknown_format_suggests_nearest(tiny_yolo):
    with pytest.raises(ArgumentError, match="did you mean 'onnx'"):
        tiny_yolo.export("onxx")
    with pytest.raises(ArgumentError, match="did you mean 'torchscript'"):
        tiny_yolo.export("torchscrip")


def test_refused_arguments_list_what_format_takes(tiny_yolo):
    with pytest.raises(ArgumentError, match=r"does not take --workspace.*it takes"):
        tiny_yolo.export("onnx", workspace=4)
    with pytest.raises(ArgumentError, match="--half and --int8"):
        registry.get("onnx").check_args({"half": True, "int8": True})
    with pytest.raises(ArgumentError, match="CUDA"):
        tiny_yolo.export("torchscript", half=True)
    with pytest.raises(ArgumentError, match="opset"):
        tiny_yolo.export("onnx", opset=5)


def test_missing_extra_names_itself(monkeypatch):
    b = registry.get("onnx")
    monkeypatch.setattr(type(b), "requires", ("onnx", "no_such_runtime_module"))
    with pytest.raises(MissingDependency, match=r'pip install "yolo-export\[onnx\]"'):
        b.require_export()


@onnx_only
def test_failed_verification_leaves_nothing(pt_copy, monkeypatch):
    b = registry.get("onnx")
    monkeypatch.setattr(type(b), "tolerance", {"fp16": (1e-12, 1.0), "fp32": (1e-4, 1.0)})
    with pytest.raises(VerificationError, match="nothing was written"):
        YOLO(pt_copy).export("onnx", half=True)
    assert not (pt_copy.parent / "tiny.onnx").exists()
    assert leftovers(pt_copy.parent) == []
    # --no-verify keeps it, with no parity figures claimed
    y = YOLO(pt_copy)
    y.export("onnx", half=True, verify=False)
    assert y.last_export.parity is None and "verification" not in YOLO(y.last_export.path).metadata


def test_export_from_yaml_lands_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    y = YOLO("yolov8n-cls.yaml", nc=4)
    path = y.export("torchscript", imgsz=32)
    assert Path(path) == tmp_path / "yolov8n-cls_32.torchscript"  # the model is 224: the size is in the name
