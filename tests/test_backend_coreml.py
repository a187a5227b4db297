"""CoreML (.mlpackage, ML Program): fp32 / fp16 / INT8-weight exports and metadata; prediction on macOS only."""

import platform
from pathlib import Path

import numpy as np
import pytest

from backend_models import cond_pt, conditioned_master, result_probs  # noqa: F401
from conftest import has, needs
from yolo_export import YOLO, registry
from yolo_export.errors import ArgumentError, MissingDependency, NotAvailable

coreml_only = needs("coremltools", extra="coreml")
on_macos = platform.system() == "Darwin"


def size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


@coreml_only
def test_coreml_exports_fp32_fp16_int8_with_readable_metadata(cond_pt, images):  # noqa: F811
    import coremltools as ct

    b = registry.get("coreml")
    y = YOLO(cond_pt)
    paths = {}
    for prec, kw in (("fp32", {}), ("fp16", {"half": True}), ("int8", {"int8": True})):
        out = cond_pt.parent / f"cond_{prec}.mlpackage"
        paths[prec] = p = Path(y.export("coreml", output=str(out), **kw))
        assert p == out and p.is_dir() and (p / "Manifest.json").exists()
        par = y.last_export.parity
        assert par["precision"] == prec
        assert par["status"] == ("passed" if on_macos else "skipped")
        meta = b.read_metadata(p)
        assert meta["names"] == y.names and meta["imgsz"] == [32, 32] and meta["task"] == "classify"
        assert meta["preprocess"]["crop"] == 32 and meta["verification"]["precision"] == prec
        assert meta["args"]["half"] is (prec == "fp16") and meta["args"]["int8"] is (prec == "int8")
        assert meta["author"] == "yolo-export" and "CoreML" not in meta.get("license", "x")
    assert not [p for p in cond_pt.parent.iterdir() if ".tmp-" in p.name or "meta-tmp" in p.name]
    assert size(paths["fp16"]) < 0.55 * size(paths["fp32"]) and size(paths["int8"]) < 0.3 * size(paths["fp32"])

    spec = ct.models.MLModel(str(paths["fp32"]), skip_model_load=True).get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    assert [i.name for i in spec.description.input] == ["images"]
    assert [o.name for o in spec.description.output] == ["output0"]
    assert list(spec.description.input[0].type.multiArrayType.shape) == [1, 3, 32, 32]
    ud = dict(spec.description.metadata.userDefined)
    assert ud["names"].startswith("{0: 'c0'") and ud["imgsz"] == "[32, 32]"  # Python-literal text
    assert spec.description.metadata.shortDescription.startswith("yolo-export")

    if on_macos:
        a, c = y(images), YOLO(paths["fp32"])(images)
        assert [r.probs.top1 for r in a] == [r.probs.top1 for r in c]
        assert np.abs(result_probs(a) - result_probs(c)).max() <= 1e-4
    else:
        with pytest.raises(NotAvailable) as e:
            YOLO(paths["fp32"])(images)
        msg = str(e.value)
        assert "needs macOS" in msg and "\n" not in msg


def test_coreml_refuses_bad_arguments(pt_copy):
    y = YOLO(pt_copy)
    with pytest.raises(ArgumentError, match="choose one of --half and --int8"):
        y.export("coreml", half=True, int8=True)
    with pytest.raises(ArgumentError, match="does not take --dynamic"):
        y.export("coreml", dynamic=True)
    with pytest.raises(ArgumentError, match="CPU"):
        y.export("coreml", device="cuda:0")
    assert not list(pt_copy.parent.glob("*.mlpackage"))


@pytest.mark.skipif(has("coremltools"), reason="coremltools is installed")
def test_coreml_missing_extra_is_one_line(pt_copy):
    with pytest.raises(MissingDependency) as e:
        YOLO(pt_copy).export("coreml")
    assert 'pip install "yolo-export[coreml]"' in str(e.value) and "\n" not in str(e.value)


def test_coreml_backend_declaration():
    b = registry.get("coreml")
    assert b.is_dir and b.suffix == ".mlpackage" and b.extra == "coreml" and set(b.args) == {"half", "int8"}
    assert registry.get("mlpackage") is b
    assert b.runtime_available()[0] is (on_macos and has("coremltools"))
