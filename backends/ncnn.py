"""ncnn (``*_ncnn_model/`` with ``model.ncnn.param`` + ``model.ncnn.bin``): converted by pnnx from TorchScript.

ncnn has no batch dimension: the runner takes one image at a time (``fixed_batch = 1``; LoadedModel loops).
fp32 exports store fp32 weights and run with fp16/bf16 storage and fp16 arithmetic switched off, so they match
PyTorch; ``--half`` stores fp16 weights and runs with fp16 storage. Metadata: ``metadata.yaml`` beside the model.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from yolo_export.errors import FileError, YoloExportError
from yolo_export.metadata import run_args
from yolo_export.registry import HALF, Backend, Runner, model_files, register

PARAM, BIN = "model.ncnn.param", "model.ncnn.bin"


class NcnnRunner(Runner):
    """An ncnn Net on CPU. ``threads``: ncnn's num_threads (default: ncnn's own choice)."""

    fixed_batch = 1

    def __init__(self, path, metadata: dict | None = None, threads: int | None = None):
        import ncnn

        from yolo_export.threads import resolve

        metadata = metadata or {}
        half = bool(run_args(metadata).get("half"))
        param, weights = _files(path)
        check_loads(param, weights, half, metadata.get("imgsz"))
        self.ncnn = ncnn
        self.net = _net(param, weights, half, resolve(threads))
        self.threads = self.net.opt.num_threads
        self.input_name = self.net.input_names()[0]
        self.output_name = self.net.output_names()[0]
        self.device = "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.stack([_extract(self.net, self.input_name, self.output_name, img) for img in x])

    def close(self):
        self.net.clear()


def _net(param, weights, half: bool, threads: int):
    """An ncnn Net (CPU, fp32 arithmetic; fp16 storage for a --half export) with ``param`` and ``weights`` loaded."""
    import ncnn

    net = ncnn.Net()
    opt = net.opt
    opt.use_vulkan_compute = False
    opt.use_fp16_storage = half
    opt.use_fp16_packed = half
    opt.use_fp16_arithmetic = False
    opt.use_bf16_storage = False
    opt.num_threads = threads
    if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
        raise FileError(f"ncnn could not load {param.name} / {weights.name} in {param.parent}")
    return net


def _extract(net, input_name: str, output_name: str, img: np.ndarray) -> np.ndarray:
    """One image (CHW; ncnn has no batch dimension) through the net: its output, flat."""
    import ncnn

    with net.create_extractor() as ex:
        ex.input(input_name, ncnn.Mat(np.ascontiguousarray(img, dtype=np.float32)))
        ret, out = ex.extract(output_name)
        if ret != 0:
            raise YoloExportError(f"ncnn extract failed with code {ret}")
        return np.array(out, dtype=np.float32).reshape(-1)


def check_loads(param: Path, weights: Path, half: bool, imgsz) -> None:
    """ncnn trusts its ``.param``: a damaged one (a padding or a count inflated, shapes that no longer agree with the
    weights) can make it read or write out of bounds and take the process down. So the net is first loaded and run
    once on a blank input in a child process; a crash, a hang or a failure there is one FileError line."""
    from yolo_export.isolation import try_in_child

    size = imgsz[0] if isinstance(imgsz, (list, tuple)) and imgsz else imgsz
    try_in_child(_try_net, (str(param), str(weights), half, int(size or 0)), [param, weights], "an ncnn model")


def _try_net(payload, report) -> bool:
    """In the child (``check_loads``): load the net, run one blank image of the model's size through it."""
    param, weights, half, size = payload
    net = _net(Path(param), Path(weights), half, 1)
    if size:
        _extract(net, net.input_names()[0], net.output_names()[0], np.zeros((3, size, size), np.float32))
    net.clear()
    return True


def _files(path):
    return model_files(path, PARAM, ("*.param",), ".bin", "ncnn")


@register
class NcnnBackend(Backend, name="ncnn", title="ncnn", order=40, suffix="_ncnn_model", is_dir=True,
                  content=("*.param", "*.bin"), writes=("*.param", "*.bin", "model_ncnn.py", "metadata.yaml"),
                  extra="ncnn", requires=("ncnn", "pnnx"), options=(HALF,)):

    def export(self, ctx):
        import torch
        from pnnx import EXEC_PATH

        model = ctx.model.cpu().float().eval()
        sample = ctx.sample.cpu().float()[:1]
        # absolute paths: pnnx runs with its scratch folder as cwd, so a relative path would point inside it
        scratch = (ctx.workdir / "pnnx").absolute()
        scratch.mkdir(parents=True, exist_ok=True)
        ts_path = scratch / "model.torchscript"
        with torch.no_grad():
            torch.jit.trace(model, sample, strict=False, check_trace=False).save(str(ts_path))
        out = (ctx.workdir / f"{ctx.stem}{self.suffix}").absolute()
        out.mkdir(parents=True, exist_ok=True)
        shape = ",".join(str(int(s)) for s in sample.shape)
        cmd = [EXEC_PATH, str(ts_path), f"inputshape=[{shape}]f32", "device=cpu",
               f"fp16={1 if ctx.args.get('half') else 0}",
               f"pnnxparam={scratch / 'model.pnnx.param'}", f"pnnxbin={scratch / 'model.pnnx.bin'}",
               f"pnnxpy={scratch / 'model_pnnx.py'}", f"pnnxonnx={scratch / 'model.pnnx.onnx'}",
               f"ncnnparam={out / PARAM}", f"ncnnbin={out / BIN}", f"ncnnpy={scratch / 'model_ncnn.py'}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=scratch)
        if proc.returncode != 0 or not (out / PARAM).exists() or not (out / BIN).exists():
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise YoloExportError(f"pnnx failed to convert the model to ncnn (exit {proc.returncode}): {tail[0]}")
        super().write_metadata(out, ctx.metadata)
        return out

    def load(self, path, device, metadata, threads=None):
        return NcnnRunner(path, metadata, threads=threads)
