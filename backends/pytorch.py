"""PyTorch: our ``.pt`` checkpoints (and Ultralytics-format ones, through the restricted importer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolo_export.registry import HALF, Backend, Runner, register


class ModuleRunner(Runner):
    any_imgsz = True    # a live module takes any input size

    def __init__(self, model, device="cpu", half=False, threads: int | None = None):
        import torch

        from yolo_export.threads import apply_torch, resolve

        from yolo_export.device import select_device

        self.torch = torch
        dev = select_device(device)
        self.device = str(dev)
        self.half = bool(half) and dev.type == "cuda"
        self.model = model.to(dev).eval()
        if self.half:
            self.model = self.model.half()
        self.dtype = torch.float16 if self.half else torch.float32
        self.dev = dev
        self.threads = apply_torch(resolve(threads))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        if torch.get_num_threads() != self.threads:   # process-wide: another model may have changed it
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            t = torch.from_numpy(x).to(self.dev, self.dtype, non_blocking=True)
            return self.model(t).float().cpu().numpy()


@register
class PyTorchBackend(Backend, name="pytorch", aliases=("pt", "torch"), title="PyTorch", order=0, suffix=".pt",
                     requires=("torch",), options=(HALF,), is_source=True):
    def export(self, ctx):
        from yolo_export.nn.checkpoint import save_checkpoint

        out = ctx.workdir / f"{ctx.stem}.pt"
        save_checkpoint(out, ctx.model, half=bool(ctx.args.get("half")), preprocess=ctx.metadata.get("preprocess"))
        return out

    def module_runner(self, model, device="cpu", half=False, threads=None):
        return ModuleRunner(model, device=device, half=half, threads=threads)

    def load(self, path: Path, device, metadata, threads=None):
        from yolo_export.metadata import run_args
        from yolo_export.nn.checkpoint import build_from_checkpoint, load_checkpoint

        model = build_from_checkpoint(load_checkpoint(path))
        return ModuleRunner(model, device=device, half=bool(run_args(metadata).get("half")), threads=threads)

    def read_metadata(self, path):
        from yolo_export.data.transforms import default_preprocess
        from yolo_export.metadata import check
        from yolo_export.nn.checkpoint import load_checkpoint

        ck = load_checkpoint(path)
        imgsz = int(ck.get("imgsz") or 224)
        meta = {"names": ck.get("names") or {}, "imgsz": [imgsz, imgsz], "batch": 1,
                "preprocess": ck.get("preprocess") or default_preprocess(imgsz), "args": {"dynamic": True},
                "version": ck.get("version"), "date": ck.get("date"), "task": "classify",
                "verification": ck.get("verification")}
        return check(meta, path)            # the same budgets as every artefact's metadata

    def write_metadata(self, path, meta):
        import torch

        from yolo_export.nn.reference_import import RestrictedUnpickler
        from yolo_export.nn.safe_load import read_torch_zip
        from yolo_export.utils import atomic_write_bytes

        ck = read_torch_zip(path, RestrictedUnpickler)  # the file just exported, read by the one checkpoint reader
        ck["verification"] = meta.get("verification")
        ck["names"] = {int(k): str(v) for k, v in (meta.get("names") or ck.get("names") or {}).items()}
        import io

        buf = io.BytesIO()
        torch.save(ck, buf)
        atomic_write_bytes(path, buf.getvalue())
