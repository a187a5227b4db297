"""ncnn, what only it has: the pnnx file set, no batch dimension, fp32 with fp16/bf16 storage off, fp16 storage.
Export, parity, reload, predict and metadata: ``test_contract.py``."""

import numpy as np
import pytest

from backend_models import torch_probs
from conftest import needs
from yolo_export import YOLO, registry
from yolo_export.errors import ArgumentError
from yolo_export.data.samples import check_inputs

pytestmark = pytest.mark.xdist_group("ncnn")   # the contract test's exports of ncnn, on the same worker
ncnn_only = needs("ncnn", "pnnx", extra="ncnn")


@ncnn_only
def test_ncnn_files_no_batch_dimension_and_fp32_storage(exported):
    row = exported("ncnn")
    row.need()
    assert {p.name for p in row.path.iterdir()} == {"model.ncnn.param", "model.ncnn.bin", "metadata.yaml"}
    ab = YOLO(row.path).backend()
    assert ab.fixed_batch == 1  # no batch dimension in ncnn: AutoBackend loops
    opt = ab.runner.net.opt
    assert not (opt.use_fp16_storage or opt.use_fp16_arithmetic or opt.use_bf16_storage)


@ncnn_only
def test_ncnn_half_fp16_storage(exported):
    row = exported("ncnn", "fp16")
    row.need()
    pt = row.source
    assert (row.path / "model.ncnn.bin").stat().st_size < 0.55 * 4 * YOLO(pt).model.fuse().num_params()
    m = YOLO(row.path)
    assert m.metadata["args"]["half"] is True and m.backend().runner.net.opt.use_fp16_storage
    x = check_inputs(32, 16, seed=3)
    out = m.backend().run(x)
    # fp16 weights and fp16 storage of activations between layers: close to PyTorch with fp16-rounded weights
    d16 = np.abs(out - torch_probs(pt, x, fp16_weights=True)).max()
    d32 = np.abs(out - torch_probs(pt, x)).max()
    print(f"ncnn fp16: max prob diff {d16:.2g} vs fp16-weight PyTorch, {d32:.2g} vs fp32 PyTorch")
    assert d16 <= 2e-2 and (out.argmax(1) == torch_probs(pt, x).argmax(1)).mean() >= 0.9


def test_ncnn_refuses_bad_arguments(pt_copy):
    y = YOLO(pt_copy)
    with pytest.raises(ArgumentError, match="does not take --dynamic"):
        y.export("ncnn", dynamic=True)
    with pytest.raises(ArgumentError, match="--int8"):
        y.export("ncnn", int8=True)
    assert not list(pt_copy.parent.glob("*ncnn*"))


def test_ncnn_backend_declaration():
    b = registry.get("ncnn")
    assert b.is_dir and b.suffix == "_ncnn_model" and b.extra == "ncnn" and set(b.args) == {"half"}
