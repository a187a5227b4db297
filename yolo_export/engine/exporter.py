"""Export a model to any registered format: validate args, build in a staging dir, verify, move into place."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from yolo_export import registry
from yolo_export.data.transforms import default_preprocess, with_imgsz
from yolo_export.errors import YoloExportError
from yolo_export.utils import LOGGER, file_size_mb, replace_path, staging_dir


@dataclass
class ExportResult:
    format: str
    path: str
    size_mb: float
    time_s: float
    precision: str
    parity: dict | None = None
    args: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def export(source, format: str = "onnx", **kwargs) -> ExportResult:
    """Export ``source`` (a YOLO with a PyTorch model) to ``format``. kwargs: only what the user set."""
    import torch

    from yolo_export import metadata as md
    from yolo_export.device import select_device
    from yolo_export.verify import verify_artefact

    backend = registry.get(format)
    given = {k: v for k, v in kwargs.items() if v is not None}
    args = backend.resolve_args(given)
    backend.require_export()
    if source.model is None:
        raise YoloExportError(f"export needs a PyTorch model (.pt or .yaml); {source.ckpt_path} is a "
                              f"{source.format} artefact already")
    device = select_device(args.get("device"))
    imgsz = int(args.get("imgsz") or source.imgsz)
    preprocess = with_imgsz(source.preprocess, imgsz) if source.preprocess else default_preprocess(imgsz)
    preprocess["layout"] = backend.layout
    batch = int(args.get("batch") or 1)

    model = copy.deepcopy(source.model).float().eval()
    reference = copy.deepcopy(model).to(device)
    model = model.fuse().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    model.imgsz = imgsz
    sample = torch.zeros(batch, 3, imgsz, imgsz, device=device)

    meta = md.build(model, imgsz=imgsz, batch=batch, args=_meta_args(args), preprocess=preprocess, fmt=backend.name)
    base = _output_base(source, args)
    out = Path(args["output"]) if args.get("output") else backend.output_path(base, args)
    t0 = time.perf_counter()
    with staging_dir(out) as wd:
        ctx = registry.ExportContext(model=model, sample=sample, args=args, metadata=meta, workdir=wd,
                                     stem=out.name.removesuffix(backend.suffix) if not backend.is_dir else base.name,
                                     device=device, source=source)
        LOGGER.info(f"exporting to {backend.title or backend.name} ({registry.precision_of(args)}, imgsz {imgsz}, "
                    f"batch {batch}{', dynamic' if args.get('dynamic') else ''})...")
        art = Path(backend.export(ctx))
        export_time = time.perf_counter() - t0
        parity = None
        if args.get("verify", True):
            parity = verify_artefact(backend, art, reference, args, preprocess, imgsz)
            meta["verification"] = parity
            backend.write_metadata(art, meta)
        final = replace_path(art, out)
    res = ExportResult(format=backend.name, path=str(final), size_mb=round(file_size_mb(final), 3),
                       time_s=round(export_time, 2), precision=registry.precision_of(args), parity=parity,
                       args={k: v for k, v in _meta_args(args).items() if v not in (None, False)})
    return res


def _meta_args(args: dict) -> dict:
    keep = ("half", "int8", "dynamic", "batch", "opset", "simplify", "imgsz", "workspace", "nms", "optimize")
    return {k: args[k] for k in keep if k in args and (isinstance(args[k], (bool, int, float, str)) or args[k] is None)}


def _output_base(source, args) -> Path:
    p = source.ckpt_path
    if p is None or getattr(source, "zoo_name", None):  # a zoo model lives in the cache: export here
        return Path.cwd() / (getattr(source, "zoo_name", None) or source.model_name or "model")
    p = Path(p)
    return p.with_name(p.stem if p.suffix else p.name)
