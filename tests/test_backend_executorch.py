"""ExecuTorch: torch.export -> XNNPACK-lowered .pte, run in ExecuTorch's runtime and compared with PyTorch;
metadata in a trailer inside the file, read back and rewritten without touching the program."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from backend_models import cond_pt, conditioned_master, result_probs, torch_probs  # noqa: F401
from conftest import needs
from yolo_export import YOLO, registry
from yolo_export.autobackend import AutoBackend
from yolo_export.errors import ArgumentError, YoloExportError
from yolo_export.verify import check_inputs

et_only = needs("executorch", extra="executorch")


@pytest.fixture(scope="module")
def pte(conditioned_master, tmp_path_factory):  # noqa: F811
    d = tmp_path_factory.mktemp("pte")
    pt = Path(shutil.copy(conditioned_master, d / "cond.pt"))
    y = YOLO(pt)
    path = Path(y.export("executorch"))  # one lowering for the module: it is the slow part (~20 s on 2 cores)
    return pt, path, y.last_export


@et_only
def test_executorch_parity_predict_and_metadata(pte, images):
    pt, path, res = pte
    assert path.name == "cond.pte" and path.is_file()
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name or "meta-tmp" in p.name]
    par = res.parity
    assert par["status"] == "passed" and par["decisive"] == par["n"] == 8
    assert par["max_abs_diff"] <= 1e-4 and par["top1_agreement"] == 1.0

    m = YOLO(path)
    assert m.format == "executorch" and m.names == YOLO(pt).names and m.imgsz == 32
    assert m.metadata["verification"]["max_abs_diff"] == par["max_abs_diff"]
    ab = m.backend()
    assert ab.runner.fixed_batch == 1  # read from the program's method metadata
    a, b = YOLO(pt)(images), m(images, batch=3)  # AutoBackend splits the batch of 3 for the batch-1 program
    assert [r.probs.top1 for r in a] == [r.probs.top1 for r in b]
    assert np.abs(result_probs(a) - result_probs(b)).max() <= 1e-4
    x = check_inputs(32, 5, seed=7)
    assert np.abs(ab.run(x) - torch_probs(pt, x)).max() <= 1e-4


@et_only
def test_executorch_metadata_trailer_rewrite_keeps_the_program(pte, tmp_path):
    from executorch.runtime import Runtime

    from yolo_export.backends.executorch import MAGIC, _split

    _, path, _ = pte
    copy = Path(shutil.copy(path, tmp_path / "copy.pte"))
    b = registry.get("executorch")
    meta = b.read_metadata(copy)
    program, blob = _split(copy.read_bytes())
    assert blob and copy.read_bytes().endswith(MAGIC)
    meta["names"] = {i: f"class {i}" for i in range(10)}
    b.write_metadata(copy, meta)
    again, blob2 = _split(copy.read_bytes())
    assert again == program and blob2 != blob  # only the trailer changed
    assert YOLO(copy).names[3] == "class 3"
    # ExecuTorch's own loader takes the bare program too: the trailer is ours, not part of its format
    bare = tmp_path / "bare.pte"
    bare.write_bytes(program)
    assert Runtime.get().load_program(bare).method_names == {"forward"}
    with pytest.raises(YoloExportError, match="carries no names"):
        AutoBackend(bare)


@et_only
def test_executorch_refuses_arguments_it_does_not_take(cond_pt):  # noqa: F811
    y = YOLO(cond_pt)
    for kw in ({"half": True}, {"int8": True}, {"dynamic": True}):
        with pytest.raises(ArgumentError, match="does not take"):
            y.export("executorch", **kw)
    assert not [p for p in cond_pt.parent.iterdir() if p.suffix == ".pte" or ".tmp-" in p.name]
