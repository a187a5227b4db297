"""OpenVINO, what only it has: the f32 inference hint, the ``rt_info`` carrier, a dynamic batch in one call, fp16
weights computed in f32, NNCF INT8. Export, parity, reload, predict and metadata: ``test_contract.py``."""

from pathlib import Path

import numpy as np
import pytest

from backend_models import torch_probs
from conftest import has, needs
from yolo_export import YOLO, registry
from yolo_export.errors import ArgumentError
from yolo_export.data.samples import check_inputs

pytestmark = pytest.mark.xdist_group("openvino")   # the contract test's exports of openvino, on the same worker
ov_only = needs("openvino", extra="openvino")


def fp32_bytes(pt) -> int:
    return 4 * YOLO(pt).model.fuse().num_params()


@ov_only
def test_openvino_f32_hint_and_rt_info_carrier(exported):
    import yaml

    from yolo_export.backends.openvino import read_rt_info

    row = exported("openvino")
    row.need()
    path, names = row.path, YOLO(row.source).names
    assert {"model.xml", "model.bin", "metadata.yaml"} <= {p.name for p in path.iterdir()}
    runner = YOLO(path).backend().runner
    assert runner.precision == "<Type: 'float32'>" and runner.fixed_batch == 1
    rt = read_rt_info(path)  # the carrier inside the IR
    assert rt["names"] == names and rt["imgsz"] == [32, 32] and rt["inference_precision"] == "f32"
    assert rt["preprocess"]["crop"] == 32 and rt["verification"]["status"] == "passed"
    on_disk = yaml.safe_load((path / "metadata.yaml").read_text())
    assert on_disk["names"][0] == "c0" and on_disk["imgsz"] == [32, 32] and on_disk["preprocess"]["layout"] == "NCHW"


@ov_only
def test_openvino_dynamic_batch_runs_any_batch_in_one_call(cond_pt):
    y = YOLO(cond_pt)
    path = y.export("openvino", dynamic=True, batch=4)
    ab = YOLO(path).backend()
    assert ab.dynamic and ab.fixed_batch is None and ab.runner.fixed_batch is None
    x = check_inputs(32, 5, seed=7)
    out = ab.runner(x)  # the compiled model itself takes the batch of 5
    assert out.shape == (5, 10)
    assert np.abs(out - torch_probs(cond_pt, x)).max() <= 1e-4


@ov_only
def test_openvino_half_stores_fp16_weights_and_computes_in_f32(exported):
    row = exported("openvino", "fp16")
    row.need()
    assert (row.path / "model.bin").stat().st_size < 0.55 * fp32_bytes(row.source)
    m = YOLO(row.path)
    assert m.metadata["args"]["half"] is True and m.metadata["inference_precision"] == "f32"
    x = check_inputs(32, 16, seed=3)
    # same as PyTorch with the weights rounded to fp16: the rounding is the only difference
    assert np.abs(m.backend().run(x) - torch_probs(row.source, x, fp16_weights=True)).max() <= 1e-4


@pytest.mark.skipif(not has("openvino", "nncf"),
                    reason="needs the 'openvino' extra (openvino, nncf)")
def test_openvino_int8_nncf_generated_calibration(cond_pt, exported, logs):
    """INT8 with NNCF on generated calibration images, and the contract's INT8 row on digits. The test model
    is untrained (far more sensitive to rounding than a trained one), so the parity gate is not applied here; the
    agreement is measured and printed, and must be far above chance (10 %)."""
    row = exported("openvino", "int8")
    row.need()
    y = YOLO(cond_pt)
    path = Path(y.export("openvino", int8=True, calib="synthetic", calib_images=32, verify=False))
    assert any("calibrating on 32 images from generated images" in line for line in logs)
    assert any("calibrating on 32 images from digits" in line for line in row.log), row.log
    for p in (path, row.path):
        assert (p / "model.bin").stat().st_size < 0.4 * fp32_bytes(cond_pt)
        assert "FakeQuantize" in (p / "model.xml").read_text() and YOLO(p).metadata["args"]["int8"] is True
    x = check_inputs(32, 64, seed=11)
    agree = (YOLO(path).backend().run(x).argmax(1) == torch_probs(cond_pt, x).argmax(1)).mean()
    print(f"openvino int8 (generated calibration, untrained model): top-1 agreement {agree:.1%} on 64 inputs")
    assert agree >= 0.5


def test_openvino_refuses_bad_arguments(pt_copy):
    y = YOLO(pt_copy)
    with pytest.raises(ArgumentError, match="choose one of --half and --int8"):
        y.export("openvino", half=True, int8=True)
    with pytest.raises(ArgumentError, match="does not take --opset"):
        y.export("openvino", opset=13)
    with pytest.raises(ArgumentError, match="CPU"):
        y.export("openvino", device="cuda:0")
    with pytest.raises(ArgumentError, match="--calib-images"):
        y.export("openvino", int8=True, calib_images=0)
    assert not list(pt_copy.parent.glob("*openvino*"))


def test_openvino_backend_declaration():
    b = registry.get("openvino")
    assert b.is_dir and b.suffix == "_openvino_model" and b.extra == "openvino"
    assert {"half", "int8", "dynamic"} <= set(b.args)
    assert registry.get("ov") is b
