"""OpenVINO: fp32 / fp16 / INT8 (NNCF) / dynamic-batch exports, run in OpenVINO and compared with PyTorch."""

import logging
from pathlib import Path

import numpy as np
import pytest

from backend_models import cond_pt, conditioned_master, result_probs, torch_probs  # noqa: F401
from conftest import has, needs
from yolo_export import YOLO, registry
from yolo_export.errors import ArgumentError, MissingDependency
from yolo_export.verify import check_inputs

ov_only = needs("openvino", extra="openvino")


@ov_only
def test_openvino_fp32_parity_predict_and_metadata(cond_pt, images):  # noqa: F811
    import yaml

    from yolo_export.backends.openvino import read_rt_info

    y = YOLO(cond_pt)
    path = Path(y.export("openvino"))
    assert path.name == "cond_openvino_model" and path.is_dir()
    assert {"model.xml", "model.bin", "metadata.yaml"} <= {p.name for p in path.iterdir()}
    assert not [p for p in cond_pt.parent.iterdir() if ".tmp-" in p.name]
    par = y.last_export.parity
    assert par["status"] == "passed" and par["decisive"] == par["n"] == 8
    assert par["max_abs_diff"] <= 1e-4 and par["top1_agreement"] == 1.0

    ov = YOLO(path)
    assert ov.format == "openvino" and ov.names == y.names and ov.imgsz == 32
    runner = ov.backend().runner
    assert runner.precision == "<Type: 'float32'>" and runner.fixed_batch == 1
    a, b = y(images), ov(images, batch=3)  # batch 3 on a static batch-1 model: AutoBackend splits it
    assert [r.probs.top1 for r in a] == [r.probs.top1 for r in b]
    assert np.abs(result_probs(a) - result_probs(b)).max() <= 1e-4

    rt = read_rt_info(path)  # the carrier inside the IR
    assert rt["names"] == y.names and rt["imgsz"] == [32, 32] and rt["inference_precision"] == "f32"
    assert rt["preprocess"]["crop"] == 32 and rt["verification"]["status"] == "passed"
    on_disk = yaml.safe_load((path / "metadata.yaml").read_text())
    assert on_disk["names"][0] == "c0" and on_disk["imgsz"] == [32, 32] and on_disk["preprocess"]["layout"] == "NCHW"
    assert ov.metadata["verification"]["max_abs_diff"] == par["max_abs_diff"]


@ov_only
def test_openvino_dynamic_batch_runs_any_batch_in_one_call(cond_pt):  # noqa: F811
    y = YOLO(cond_pt)
    path = y.export("openvino", dynamic=True, batch=4)
    ab = YOLO(path).backend()
    assert ab.dynamic and ab.fixed_batch is None and ab.runner.fixed_batch is None
    x = check_inputs(32, 5, seed=7)
    out = ab.runner(x)  # the compiled model itself takes the batch of 5
    assert out.shape == (5, 10)
    assert np.abs(out - torch_probs(cond_pt, x)).max() <= 1e-4


class LogLines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        logging.getLogger("yolo_export").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("yolo_export").removeHandler(self)

    def text(self):
        return "\n".join(self.lines)


def fp32_bytes(pt) -> int:
    return 4 * YOLO(pt).model.fuse().num_params()


@ov_only
def test_openvino_half_stores_fp16_weights_and_computes_in_f32(cond_pt):  # noqa: F811
    y = YOLO(cond_pt)
    half = Path(y.export("openvino", half=True, verify=False))
    assert (half / "model.bin").stat().st_size < 0.55 * fp32_bytes(cond_pt)
    m = YOLO(half)
    assert m.metadata["args"]["half"] is True and m.metadata["inference_precision"] == "f32"
    x = check_inputs(32, 16, seed=3)
    out = m.backend().run(x)
    # same as PyTorch with the weights rounded to fp16: the rounding is the only difference
    assert np.abs(out - torch_probs(cond_pt, x, fp16_weights=True)).max() <= 1e-4
    ref = torch_probs(cond_pt, x)
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.9


@pytest.mark.skipif(not has("openvino", "nncf"), reason="needs the 'openvino' extra (openvino, nncf)")
def test_openvino_int8_nncf_generated_calibration(cond_pt):  # noqa: F811
    """INT8 with NNCF on generated calibration images. The test model is untrained (and so far more sensitive to
    rounding than a trained one: fp16 weights alone move its probabilities by ~2 %), so the parity gate is not
    applied here; the agreement is measured and printed, and must be far above chance (10 %)."""
    y = YOLO(cond_pt)
    with LogLines() as log:
        path = Path(y.export("openvino", int8=True, calib="synthetic", calib_images=32, verify=False))
    assert "calibrating on 32 images from generated images" in log.text()
    assert (path / "model.bin").stat().st_size < 0.4 * fp32_bytes(cond_pt)
    assert "FakeQuantize" in (path / "model.xml").read_text()
    m = YOLO(path)
    assert m.metadata["args"]["int8"] is True and m.names == y.names
    x = check_inputs(32, 64, seed=11)
    agree = (m.backend().run(x).argmax(1) == torch_probs(cond_pt, x).argmax(1)).mean()
    print(f"openvino int8 (generated calibration, untrained model): top-1 agreement {agree:.1%} on 64 inputs")
    assert agree >= 0.5


@pytest.mark.skipif(not has("openvino", "nncf", "yolo_export.data.datasets"),
                    reason="needs the 'openvino' extra and the digits dataset module")
def test_openvino_int8_calibrated_on_digits(cond_pt):  # noqa: F811
    y = YOLO(cond_pt)
    with LogLines() as log:
        path = y.export("openvino", int8=True, data="digits", calib_images=64, verify=False)
    assert "images from digits" in log.text()
    assert YOLO(path).metadata["args"]["int8"] is True


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


@pytest.mark.skipif(has("openvino"), reason="openvino is installed")
def test_openvino_missing_extra_is_one_line(pt_copy):
    with pytest.raises(MissingDependency) as e:
        YOLO(pt_copy).export("openvino")
    assert 'pip install "yolo-export[openvino]"' in str(e.value) and "\n" not in str(e.value)


def test_openvino_backend_declaration():
    b = registry.get("openvino")
    assert b.is_dir and b.suffix == "_openvino_model" and b.extra == "openvino"
    assert {"half", "int8", "dynamic"} <= set(b.args)
    assert registry.get("ov") is b
