"""TorchScript (``.torchscript``): traced module, metadata as JSON in the ``config.txt`` extra file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolo_export.errors import ArgumentError, FileError, MetadataError, NotAvailable
from yolo_export.metadata import run_args, to_json
from yolo_export.registry import DYNAMIC, HALF, Backend, Option, Runner, register

EXTRA = "config.txt"


class TorchScriptRunner(Runner):
    def __init__(self, path, device="cpu", half=False, threads: int | None = None):
        import torch

        from yolo_export.device import select_device
        from yolo_export.threads import apply_torch, resolve

        self.torch = torch
        self.dev = select_device(device)
        self.device = str(self.dev)
        self.module = torch.jit.load(str(path), map_location=self.dev).eval()
        self.dtype = torch.float16 if (half and self.dev.type == "cuda") else torch.float32
        self.threads = apply_torch(resolve(threads))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            return self.module(torch.from_numpy(x).to(self.dev, self.dtype)).float().cpu().numpy()


OPTIMIZE = Option("optimize", bool, False, "TorchScript mobile optimisation.", applies=("fp32",), recorded=True)


@register
class TorchScriptBackend(Backend, name="torchscript", aliases=("ts", "jit"), title="TorchScript", order=10,
                         suffix=".torchscript", requires=("torch",), options=(HALF, OPTIMIZE, DYNAMIC)):

    def check_args(self, args):
        super().check_args(args)
        if args.get("half") and not str(args.get("device") or "cpu").startswith(("cuda", "0", "1", "2", "3")):
            raise ArgumentError("torchscript --half needs a CUDA device (--device 0); fp16 conv is not run on CPU")
        if args.get("optimize") and not args.get("half"):   # with --half: the option's 'applies' line says drop it
            import torch
            import torch.backends.xnnpack

            if not torch.backends.xnnpack.enabled:   # optimize_for_mobile would fail after the trace
                raise NotAvailable(f"torchscript --optimize (mobile) needs a torch built with XNNPACK; this one "
                                   f"({torch.__version__}) is not: drop --optimize")

    def export(self, ctx):
        import torch

        model, sample = ctx.model, ctx.sample
        if ctx.args.get("half"):
            model, sample = model.half(), sample.half()
        with torch.no_grad():
            ts = torch.jit.trace(model, sample, strict=False, check_trace=False)
        if ctx.args.get("optimize"):
            from torch.utils.mobile_optimizer import optimize_for_mobile

            ts = optimize_for_mobile(ts)
        out = ctx.workdir / f"{ctx.stem}.torchscript"
        _save(ts, out, ctx.metadata)
        return out

    def load(self, path, device, metadata, threads=None):
        runner = TorchScriptRunner(path, device, half=bool(run_args(metadata).get("half")), threads=threads)
        warm_up(runner, metadata)
        return runner

    def write_metadata(self, path: Path, meta):
        import torch

        _save(torch.jit.load(str(path), map_location="cpu"), path, meta)

    def read_metadata(self, path):
        """``extra/config.txt`` read straight from the zip archive: nothing in the file is loaded or run."""
        from yolo_export.limits import is_zip, loads_json, zip_member
        from yolo_export.metadata import decode

        field = f"TorchScript extra/{EXTRA}"
        raw = zip_member(path, lambda name: name.split("/", 1)[-1] == f"extra/{EXTRA}", field)
        if raw is None:
            if not is_zip(path):
                raise FileError(f"{path} is not a TorchScript archive (not a zip file)")
            return {}
        try:
            data = loads_json(raw, field, path) if raw.strip() else {}
        except ValueError as e:
            raise MetadataError(f"{path}: unreadable {field} ({str(e)[:80]})") from None
        return decode(data, path) if isinstance(data, dict) else {}


def _save(module, path: Path, meta: dict) -> None:
    """Serialise in memory, then write atomically: torch.jit.save straight to a full disk aborts the process."""
    import io

    import torch

    from yolo_export.utils import atomic_write_bytes

    buf = io.BytesIO()
    torch.jit.save(module, buf, _extra_files={EXTRA: to_json(meta)})
    atomic_write_bytes(path, buf.getvalue())


def warm_up(runner, metadata: dict) -> None:
    """Two calls at the artefact's own shape while loading: TorchScript's profiling executor records shapes on the
    first call and compiles fused kernels on the second (~0.5 s on 2 cores), which would otherwise land in the first
    inference timings (the demo's 10 ms/img TorchScript figure over 359 images was mostly this)."""
    imgsz = metadata.get("imgsz") or [224, 224]
    size = imgsz if isinstance(imgsz, (list, tuple)) else [imgsz, imgsz]
    batch = int(metadata.get("batch") or 1) if not run_args(metadata).get("dynamic") else 1
    x = np.zeros((max(1, min(batch, 64)), 3, int(size[0]), int(size[-1])), dtype=np.float32)
    try:
        for _ in range(2):
            runner(x)
    except Exception as e:  # noqa: BLE001 - a model that cannot run says so on its first real input, in full
        from yolo_export.utils import LOGGER

        LOGGER.debug(f"TorchScript warm-up skipped: {e}")
