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
@pytest.mark.parametrize("dynamic", [False, True])
def test_onnx_graph_is_already_what_onnxslim_returns(pt_copy, dynamic):
    """The traced graph (C2f halves as constant slices, then tidied) is the simplified one: onnxslim changes no node
    of it, so the export skips onnxslim's import and run; without the tidy step it would not be."""
    import collections
    import subprocess
    import sys

    import onnx

    onnxslim = pytest.importorskip("onnxslim")
    from yolo_export.backends import onnx as ob

    path = Path(YOLO(pt_copy).export("onnx", dynamic=dynamic))
    m = onnx.load(str(path))
    ops = collections.Counter(n.op_type for n in m.graph.node)
    assert not ops.keys() & {"Shape", "Gather", "Div", "Constant", "Identity"} and ops["Slice"] == 8
    assert not ob.left_to_fold(m)
    slim = onnxslim.slim(onnx.load(str(path)))
    assert [n.op_type for n in slim.graph.node] == [n.op_type for n in m.graph.node]
    assert len(slim.graph.initializer) == len(m.graph.initializer)
    code = (f"import sys; from yolo_export import YOLO; YOLO({str(pt_copy)!r}).export('onnx', output="
            f"{str(pt_copy.with_name('again.onnx'))!r}); print('onnxslim' in sys.modules, 'onnxsim' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@onnx_only
def test_onnx_tidy_folds_constants_and_identities():
    """tidy: Constant nodes become initializers (equal ones once), Identity of an initializer is replaced by it, and
    a graph output is never renamed; left_to_fold sees what is left."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from yolo_export.backends import onnx as ob

    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    c = [helper.make_node("Constant", [], [f"k{i}"], value=numpy_helper.from_array(np.array([1.0], np.float32)))
         for i in range(2)]
    nodes = c + [helper.make_node("Identity", ["w"], ["w2"]), helper.make_node("MatMul", ["x", "w2"], ["y"]),
                 helper.make_node("Add", ["y", "k0"], ["z"]), helper.make_node("Add", ["z", "k1"], ["out"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert ob.left_to_fold(model)
    ob.tidy(model)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add", "Add"]
    assert sorted(i.name for i in model.graph.initializer) == ["k0", "w"]
    assert list(model.graph.node[0].input) == ["x", "w"] and list(model.graph.node[2].input) == ["z", "k0"]
    assert model.graph.output[0].name == "out" and not ob.left_to_fold(model)
    import onnxruntime as ort

    x = np.array([[1.0, 2.0]], np.float32)
    y = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert np.allclose(y, x @ np.ones((2, 2)) + 2)


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
