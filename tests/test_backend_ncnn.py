"""ncnn via pnnx: fp32 and fp16-storage exports, run in ncnn and compared with PyTorch."""

from pathlib import Path

import numpy as np
import pytest

from backend_models import cond_pt, conditioned_master, result_probs, torch_probs  # noqa: F401
from conftest import has, needs
from yolo_export import YOLO, registry
from yolo_export.errors import ArgumentError, MissingDependency
from yolo_export.verify import check_inputs

ncnn_only = needs("ncnn", "pnnx", extra="ncnn")


@ncnn_only
def test_ncnn_fp32_parity_predict_and_metadata(cond_pt, images):  # noqa: F811
    import yaml

    y = YOLO(cond_pt)
    path = Path(y.export("ncnn"))
    assert path.name == "cond_ncnn_model"
    assert {p.name for p in path.iterdir()} == {"model.ncnn.param", "model.ncnn.bin", "metadata.yaml"}
    assert not [p for p in cond_pt.parent.iterdir() if ".tmp-" in p.name]
    par = y.last_export.parity
    assert par["status"] == "passed" and par["decisive"] == par["n"] == 8
    assert par["max_abs_diff"] <= 1e-4 and par["top1_agreement"] == 1.0

    nc = YOLO(path)
    assert nc.format == "ncnn" and nc.names == y.names and nc.imgsz == 32
    assert nc.backend().fixed_batch == 1  # no batch dimension in ncnn: AutoBackend loops
    opt = nc.backend().runner.net.opt
    assert not (opt.use_fp16_storage or opt.use_fp16_arithmetic or opt.use_bf16_storage)
    a, b = y(images), nc(images, batch=4)
    assert [r.probs.top1 for r in a] == [r.probs.top1 for r in b]
    assert np.abs(result_probs(a) - result_probs(b)).max() <= 1e-4

    meta = yaml.safe_load((path / "metadata.yaml").read_text())
    assert meta["names"][3] == "c3" and meta["imgsz"] == [32, 32] and meta["preprocess"]["crop"] == 32
    assert nc.metadata["verification"]["status"] == "passed" and nc.metadata["preprocess"]["layout"] == "NCHW"


@ncnn_only
def test_ncnn_half_fp16_storage(cond_pt):  # noqa: F811
    y = YOLO(cond_pt)
    path = Path(y.export("ncnn", half=True, verify=False))
    assert (path / "model.ncnn.bin").stat().st_size < 0.55 * 4 * YOLO(cond_pt).model.fuse().num_params()
    m = YOLO(path)
    assert m.metadata["args"]["half"] is True and m.backend().runner.net.opt.use_fp16_storage
    x = check_inputs(32, 16, seed=3)
    out = m.backend().run(x)
    # fp16 weights and fp16 storage of activations between layers: close to PyTorch with fp16-rounded weights
    d16 = np.abs(out - torch_probs(cond_pt, x, fp16_weights=True)).max()
    d32 = np.abs(out - torch_probs(cond_pt, x)).max()
    print(f"ncnn fp16: max prob diff {d16:.2g} vs fp16-weight PyTorch, {d32:.2g} vs fp32 PyTorch")
    assert d16 <= 2e-2 and (out.argmax(1) == torch_probs(cond_pt, x).argmax(1)).mean() >= 0.9


def test_ncnn_refuses_bad_arguments(pt_copy):
    y = YOLO(pt_copy)
    with pytest.raises(ArgumentError, match="does not take --dynamic"):
        y.export("ncnn", dynamic=True)
    with pytest.raises(ArgumentError, match="--int8"):
        y.export("ncnn", int8=True)
    assert not list(pt_copy.parent.glob("*ncnn*"))


@pytest.mark.skipif(has("ncnn", "pnnx"), reason="ncnn and pnnx are installed")
def test_ncnn_missing_extra_is_one_line(pt_copy):
    with pytest.raises(MissingDependency) as e:
        YOLO(pt_copy).export("ncnn")
    assert 'pip install "yolo-export[ncnn]"' in str(e.value) and "\n" not in str(e.value)


def test_ncnn_backend_declaration():
    b = registry.get("ncnn")
    assert b.is_dir and b.suffix == "_ncnn_model" and b.extra == "ncnn" and set(b.args) == {"half"}
