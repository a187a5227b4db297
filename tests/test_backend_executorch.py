"""ExecuTorch, what only it has: the batch read from the program's method metadata, and the metadata trailer that a
rewrite changes without touching the program. Export, parity, reload, predict: ``test_contract.py``."""

import shutil
from pathlib import Path

import pytest

from conftest import needs
from yolo_export import YOLO, registry
from yolo_export.autobackend import AutoBackend
from yolo_export.errors import ArgumentError, YoloExportError

pytestmark = pytest.mark.xdist_group("executorch")   # the contract test's export (the slow lowering), shared
et_only = needs("executorch", extra="executorch")


@et_only
def test_executorch_batch_from_the_program_and_trailer_rewrite_keeps_it(exported, tmp_path):
    from executorch.runtime import Runtime

    from yolo_export.backends.executorch import MAGIC, _split

    row = exported("executorch")
    row.need()
    assert YOLO(row.path).backend().runner.fixed_batch == 1  # read from the program's method metadata
    copy = Path(shutil.copy(row.path, tmp_path / "copy.pte"))
    b = registry.get("executorch")
    meta = b.read_metadata(copy)
    program, blob = _split(copy.read_bytes())
    assert blob and copy.read_bytes().endswith(MAGIC)
    b.write_metadata(copy, {**meta, "names": {i: f"class {i}" for i in range(10)}})
    again, blob2 = _split(copy.read_bytes())
    assert again == program and blob2 != blob  # only the trailer changed
    # ExecuTorch's own loader takes the bare program too: the trailer is ours, not part of its format
    bare = tmp_path / "bare.pte"
    bare.write_bytes(program)
    assert Runtime.get().load_program(bare).method_names == {"forward"}
    with pytest.raises(YoloExportError, match="carries no names"):
        AutoBackend(bare)


@et_only
def test_executorch_refuses_arguments_it_does_not_take(cond_pt):
    y = YOLO(cond_pt)
    for kw in ({"half": True}, {"int8": True}, {"dynamic": True}):
        with pytest.raises(ArgumentError, match="does not take"):
            y.export("executorch", **kw)
    assert not [p for p in cond_pt.parent.iterdir() if p.suffix == ".pte" or ".tmp-" in p.name]
