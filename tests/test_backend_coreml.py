"""CoreML (.mlpackage, ML Program), what only it has: the spec (inputs, outputs, shape), Python-literal
``user_defined_metadata``, fp16 / INT8-weight sizes, and prediction that needs macOS. Export, parity (on macOS),
metadata round trip: ``test_contract.py``."""

import platform
from pathlib import Path

import pytest

from conftest import has, needs
from yolo_export import YOLO, registry
from yolo_export.errors import ArgumentError, NotAvailable

pytestmark = pytest.mark.xdist_group("coreml")   # the contract test's exports of coreml, on the same worker
coreml_only = needs("coremltools", extra="coreml")
on_macos = platform.system() == "Darwin"


def size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


@coreml_only
def test_coreml_spec_metadata_text_and_precision_sizes(exported):
    import coremltools as ct

    rows = {prec: exported("coreml", prec) for prec in ("fp32", "fp16", "int8")}
    for r in rows.values():
        r.need()
        assert (r.path / "Manifest.json").exists()
    meta = registry.get("coreml").read_metadata(rows["fp32"].path)
    assert meta["author"] == "yolo-export" and "CoreML" not in meta.get("license", "x")
    fp32 = size(rows["fp32"].path)
    assert size(rows["fp16"].path) < 0.55 * fp32 and size(rows["int8"].path) < 0.3 * fp32

    spec = ct.models.MLModel(str(rows["fp32"].path), skip_model_load=True).get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    assert [i.name for i in spec.description.input] == ["images"]
    assert [o.name for o in spec.description.output] == ["output0"]
    assert list(spec.description.input[0].type.multiArrayType.shape) == [1, 3, 32, 32]
    ud = dict(spec.description.metadata.userDefined)
    assert ud["names"].startswith("{0: 'c0'") and ud["imgsz"] == "[32, 32]"  # Python-literal text
    assert spec.description.metadata.shortDescription.startswith("yolo-export")


@coreml_only
@pytest.mark.skipif(on_macos, reason="CoreML predicts on macOS: test_contract.py runs it there")
def test_coreml_predict_off_macos_is_one_line(exported, images):
    row = exported("coreml")
    row.need()
    with pytest.raises(NotAvailable) as e:
        YOLO(row.path)(images)
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


def test_coreml_backend_declaration():
    b = registry.get("coreml")
    assert b.is_dir and b.suffix == ".mlpackage" and b.extra == "coreml" and set(b.args) == {"half", "int8"}
    assert registry.get("mlpackage") is b
    assert b.runtime_available()[0] is (on_macos and has("coremltools"))
