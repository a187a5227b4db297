"""CUDA device paths for .pt, TorchScript and ONNX: predict, val, train and export.

Without an NVIDIA GPU (this kind of machine) every CUDA request must end in one clear line and leave nothing behind;
with one, the CUDA tests at the bottom run (fp32 and fp16 on the GPU against PyTorch on the CPU).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import IMGSZ, has, needs
from gpusim import active as simulated

try:
    import torch

    HAVE_CUDA = bool(torch.cuda.is_available())
except ImportError:  # pragma: no cover
    HAVE_CUDA = False
no_cuda = pytest.mark.skipif(HAVE_CUDA, reason="this machine has a CUDA GPU")
gpu_machine = pytest.mark.skipif(not HAVE_CUDA, reason="needs an NVIDIA GPU with CUDA")
needs_cuda = pytest.mark.skipif(not HAVE_CUDA or bool(simulated()),
                                reason="simulated GPU (tests/gpusim.py): CUDA kernels cannot run on this machine"
                                if HAVE_CUDA else "needs an NVIDIA GPU with CUDA")


def _ort_cuda() -> tuple[bool, str]:
    """(onnxruntime has its CUDA provider, the reason when not)."""
    if not has("onnxruntime"):
        return False, "needs the 'onnx' extra (onnxruntime not installed)"
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" in providers:
        return True, ""
    return False, (f"onnxruntime {ort.__version__} has no CUDA provider here ({', '.join(providers)}): "
                   f"pip install onnxruntime-gpu")
CUDA_DEVICES = ["0", "cuda:0", "cuda", "0,1"]


def _one_line(code, err, expect_code=1):
    lines = err.strip().splitlines()
    assert code == expect_code and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


def _listing(d):
    return sorted(p.name for p in d.iterdir())


@pytest.fixture(scope="module")
def artefacts(tiny_pt, tmp_path_factory):
    """The tiny model as TorchScript and (where the onnx extra is installed) ONNX, exported on the CPU."""
    from yolo_export import YOLO

    d = tmp_path_factory.mktemp("cuda-artefacts")
    pt = d / "tiny.pt"
    shutil.copy(tiny_pt, pt)
    y = YOLO(pt)
    out = {"pt": pt, "torchscript": y.export("torchscript")}
    if has("onnx", "onnxruntime"):
        out["onnx"] = y.export("onnx")
    return out


def test_parse_device():
    from yolo_export.device import parse_device
    from yolo_export.errors import YoloExportError

    assert [parse_device(d) for d in (None, "", "cpu", "CPU", "0", "cuda", "cuda:1", "0,1", " 1 ")] == \
        ["cpu", "cpu", "cpu", "cpu", "cuda:0", "cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    with pytest.raises(YoloExportError, match="unknown device"):
        parse_device("gpu")


@no_cuda
@pytest.mark.parametrize("device", CUDA_DEVICES)
def test_select_device_refuses_cuda_in_one_line(device):
    from yolo_export.device import select_device
    from yolo_export.errors import NotAvailable

    with pytest.raises(NotAvailable) as e:
        select_device(device)
    msg = str(e.value)
    assert "\n" not in msg and "no usable NVIDIA GPU" in msg and "--device cpu" in msg
    assert select_device("cpu").type == "cpu"


@no_cuda
@pytest.mark.parametrize("kind", ["pt", "torchscript", "onnx"])
@pytest.mark.parametrize("device", ["0", "cuda:0"])
def test_cli_predict_on_cuda_is_one_line(cli, artefacts, images, kind, device):
    if kind not in artefacts:
        pytest.skip("needs the 'onnx' extra")
    code, out, err = cli("predict", "--model", artefacts[kind], "--source", images, "--device", device)
    line = _one_line(code, err)
    assert "CUDA" in line and "NVIDIA GPU" in line and out == ""


@no_cuda
def test_cli_predict_half_on_cuda_is_one_line(cli, artefacts, images):
    code, out, err = cli("predict", "--model", artefacts["pt"], "--source", images, "--device", "0", "--half")
    assert "NVIDIA GPU" in _one_line(code, err)


@no_cuda
@pytest.mark.parametrize("fmt", ["torchscript", "onnx", "pytorch"])
@pytest.mark.parametrize("device", ["0", "cuda:0"])
def test_cli_export_on_cuda_is_one_line_and_leaves_nothing(cli, pt_copy, fmt, device):
    if fmt == "onnx" and not has("onnx", "onnxruntime"):
        pytest.skip("needs the 'onnx' extra")
    before = _listing(pt_copy.parent)
    extra = ["--output", str(pt_copy.parent / "out.pt")] if fmt == "pytorch" else []
    code, out, err = cli(pt_copy, "--format", fmt, "--device", device, *extra)
    assert "no usable NVIDIA GPU" in _one_line(code, err)
    assert _listing(pt_copy.parent) == before


def test_torchscript_half_needs_cuda(cli, pt_copy):
    before = _listing(pt_copy.parent)
    code, out, err = cli(pt_copy, "--format", "torchscript", "--half")
    assert "--device 0" in _one_line(code, err, expect_code=2)
    assert _listing(pt_copy.parent) == before


@no_cuda
def test_python_api_cuda_requests_raise_not_available(artefacts, images):
    from yolo_export import YOLO
    from yolo_export.autobackend import AutoBackend
    from yolo_export.errors import NotAvailable

    with pytest.raises(NotAvailable):
        YOLO(artefacts["pt"]).predict(images, device="0")
    with pytest.raises(NotAvailable):
        YOLO(artefacts["torchscript"], device="cuda:0").predict(images)
    for kind in ("torchscript", "onnx"):
        if kind in artefacts:
            with pytest.raises(NotAvailable, match="NVIDIA GPU"):
                AutoBackend(artefacts[kind], device="0")


@needs("onnx", "onnxruntime", extra="onnx")
@no_cuda
def test_onnx_device_zero_never_falls_back_to_cpu(artefacts):
    """'0' means CUDA for ONNX too: it must refuse, not quietly run on the CPU."""
    from yolo_export.backends.onnx import OrtRunner
    from yolo_export.errors import NotAvailable

    for dev in ("0", "cuda", "cuda:0"):
        with pytest.raises(NotAvailable):
            OrtRunner(artefacts["onnx"], dev)


def test_half_is_a_no_op_on_cpu(tiny_yolo, images):
    """--half asks for fp16 on CUDA; on the CPU the PyTorch runner stays fp32 and answers as fp32 does."""
    from yolo_export import YOLO
    from yolo_export.backends.pytorch import ModuleRunner
    from yolo_export.data.samples import check_inputs

    r = ModuleRunner(YOLO("yolov8n-cls.yaml", nc=10).model, device="cpu", half=True)
    assert r.half is False and r.dtype == torch.float32
    x = check_inputs(IMGSZ, 4)
    assert next(r.model.parameters()).dtype == torch.float32 and r(x).dtype == np.float32
    a = [p.probs.data for p in tiny_yolo.predict(images, half=True)]
    b = [p.probs.data for p in tiny_yolo.predict(images)]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))


# ------------------------------------------------------------------------------------------- val / train
def _tiny_folder(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(10):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (IMGSZ, IMGSZ, 3), dtype=np.uint8)).save(d / "0.png")
    return root


@no_cuda
def test_val_on_cuda_is_not_available(artefacts, tmp_path):
    pytest.importorskip("yolo_export.engine.validator")
    from yolo_export import YOLO
    from yolo_export.errors import NotAvailable

    data = _tiny_folder(tmp_path / "data")
    for kind in ("pt", "torchscript", "onnx"):
        if kind in artefacts:
            with pytest.raises(NotAvailable, match="NVIDIA GPU"):
                YOLO(artefacts[kind]).val(data=str(data), device="0", progress=False)


@no_cuda
def test_train_on_cuda_is_not_available(pt_copy, tmp_path):
    pytest.importorskip("yolo_export.engine.trainer")
    from yolo_export import YOLO
    from yolo_export.errors import NotAvailable

    data = _tiny_folder(tmp_path / "data")
    with pytest.raises(NotAvailable, match="NVIDIA GPU"):
        YOLO(pt_copy).train(data=str(data), epochs=1, imgsz=IMGSZ, device="0", project=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))


# ------------------------------------------------------------------------------------------- on a GPU
@needs_cuda
@pytest.mark.parametrize("half", [False, True])
def test_pt_and_torchscript_on_cuda(tiny_yolo, pt_copy, images, half):
    from yolo_export import YOLO
    from yolo_export.autobackend import AutoBackend
    from yolo_export.data.samples import check_inputs

    x = check_inputs(IMGSZ, 8)
    with torch.no_grad():
        ref = tiny_yolo.model.float().eval().cpu()(torch.from_numpy(x)).numpy()
    tol = 1e-2 if half else 1e-4
    ab = AutoBackend(copy_model(tiny_yolo), device="0", half=half)
    assert ab.runner.half is half and np.abs(ab.run(x) - ref).max() < tol
    y = YOLO(pt_copy)
    ts = y.export("torchscript", device="0", half=half or None)
    assert y.last_export.parity["status"] == "passed"
    r = AutoBackend(ts, device="cuda:0")
    assert r.runner.dtype == (torch.float16 if half else torch.float32)
    assert np.abs(r.run(x) - ref).max() < tol
    top = [p.probs.top1 for p in YOLO(pt_copy).predict(images)]
    assert [p.probs.top1 for p in YOLO(pt_copy).predict(images, device="0", half=half)] == top


@gpu_machine
def test_select_device_on_a_gpu_machine():
    from yolo_export.device import select_device
    from yolo_export.errors import NotAvailable

    assert select_device("0").type == "cuda" and select_device("cuda").index == 0
    n = torch.cuda.device_count()
    with pytest.raises(NotAvailable, match=f"only {n} CUDA device"):
        select_device(str(n))


@gpu_machine
@needs("onnx", "onnxruntime", extra="onnx")
def test_onnx_without_cuda_provider_is_one_line(artefacts):
    """A GPU machine whose onnxruntime has no CUDA provider (plain 'onnxruntime'): ONNX on CUDA is refused in one
    line naming onnxruntime-gpu, never run on the CPU instead."""
    from yolo_export.autobackend import AutoBackend
    from yolo_export.errors import NotAvailable

    ok, why = _ort_cuda()
    if ok:
        pytest.skip("onnxruntime has its CUDA provider here")
    for dev in ("0", "cuda:0"):
        with pytest.raises(NotAvailable, match="onnxruntime-gpu") as e:
            AutoBackend(artefacts["onnx"], device=dev)
        assert "\n" not in str(e.value)


@needs_cuda
@needs("onnx", "onnxruntime", extra="onnx")
def test_onnx_on_cuda(pt_copy):
    from yolo_export import YOLO
    from yolo_export.autobackend import AutoBackend
    from yolo_export.data.samples import check_inputs

    ok, why = _ort_cuda()
    if not ok:
        pytest.skip(why)
    y = YOLO(pt_copy)
    path = y.export("onnx", device="0", dynamic=True, batch=4)
    assert y.last_export.parity["status"] == "passed"
    x = check_inputs(IMGSZ, 5)
    cpu, gpu = AutoBackend(path, device="cpu").run(x), AutoBackend(path, device="0").run(x)
    assert np.abs(cpu - gpu).max() < 1e-4


@needs_cuda
def test_val_on_cuda(artefacts, tmp_path):
    pytest.importorskip("yolo_export.engine.validator")
    from yolo_export import YOLO

    data = _tiny_folder(tmp_path / "data")
    cpu = YOLO(artefacts["pt"]).val(data=str(data), device="cpu", progress=False)
    gpu = YOLO(artefacts["pt"]).val(data=str(data), device="0", progress=False)
    assert gpu["top1"] == cpu["top1"]


def copy_model(tiny_yolo):
    import copy

    return copy.deepcopy(tiny_yolo.model)
