"""Export a model to any registered format: validate args, build in a staging dir, verify, move into place."""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from yolo_export import registry
from yolo_export.data.transforms import default_preprocess, with_imgsz
from yolo_export.errors import ArgumentError, OutputError
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
    calibration: str | None = None  # INT8: the --data it calibrated on, or 'synthetic'

    def to_dict(self) -> dict:
        return asdict(self)


def export(source, format: str = "onnx", **kwargs) -> ExportResult:
    """Export ``source`` (a YOLO with a PyTorch model) to ``format``. kwargs: only what the user set.

    Every argument and the output path are checked before any work starts; the artefact is built in a staging
    folder beside its destination and moved into place only when finished and verified (see ``plan_output``)."""
    import torch

    from yolo_export import metadata as md
    from yolo_export.device import select_device
    from yolo_export.verify import verify_artefact

    format, flags = registry.split_precision(format)
    backend = registry.get(format)
    given = {**flags, **{k: v for k, v in kwargs.items() if v is not None}}
    force = registry.option("force").check(given.pop("force", False))   # on or off, like every flag
    args = backend.resolve_args(given)
    if source.model is None:   # before the extra: installing it would not help
        raise ArgumentError(f"export needs a PyTorch model (.pt or .yaml); {source.ckpt_path} is a "
                            f"{source.format} artefact already")
    backend.require_export()
    calib = check_calibration(args, backend)
    device = select_device(args.get("device"))
    if device.type == "cpu":
        from yolo_export.threads import apply_torch, resolve

        apply_torch(resolve(args.get("threads") or getattr(source, "threads", None)))
    imgsz = int(args.get("imgsz") or source.imgsz)
    base = _output_base(source, args)
    out = plan_output(backend, args.get("output"), registry.default_output(backend, base, args, source.imgsz),
                      reads=_reads(source, args), force=force)
    preprocess = with_imgsz(source.preprocess, imgsz) if source.preprocess else default_preprocess(imgsz)
    preprocess["layout"] = backend.layout
    batch = int(args.get("batch") or 1)

    model, reference = _prepare_model(source.model, device, imgsz)
    sample = torch.zeros(batch, 3, imgsz, imgsz, device=device)
    meta = md.build(model, imgsz=imgsz, batch=batch, args=_meta_args(args), preprocess=preprocess, fmt=backend.name)
    t0 = time.perf_counter()
    with staging_dir(out) as wd:
        ctx = registry.ExportContext(model=model, sample=sample, args=args, metadata=meta, workdir=wd,
                                     stem=out.name.removesuffix(backend.suffix) if not backend.is_dir else base.name,
                                     device=device, destination=out)
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
                       args={k: v for k, v in _meta_args(args).items() if v not in (None, False)},
                       calibration=calib)
    return res


def _prepare_model(source_model, device, imgsz: int):
    """(the fused fp32 eval copy that backends export, an unfused copy for the parity check), both on ``device``;
    the source model is left as it was."""
    model = copy.deepcopy(source_model).float().eval()
    reference = copy.deepcopy(model).to(device)
    model = model.fuse().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    model.imgsz = imgsz
    return model, reference


def check_calibration(args: dict, backend) -> str | None:
    """INT8 needs real calibration images (``--data``) or the explicit ``--calib synthetic`` choice; checked before
    any work. Returns what the result reports: the dataset, ``"synthetic"``, or None without --int8."""
    calib = args.get("calib")  # checked with the other options: a choice, given with a calibrating --int8 only
    if not args.get("int8") or not backend.calibrates:  # no --int8, or 8-bit weights only (MNN, CoreML)
        return None
    if calib == "synthetic":
        if args.get("data"):
            raise ArgumentError("choose one: --data (calibrate on its images) or --calib synthetic")
        if args.get("fraction"):
            raise ArgumentError("--fraction takes a share of --data's images; --calib synthetic uses none: "
                                "drop --fraction")
        LOGGER.warning("warning: INT8 calibration on generated noise (--calib synthetic): accuracy will suffer; "
                       "pass --data with images like the ones the model sees")
        return "synthetic"
    if not args.get("data"):
        raise ArgumentError("--int8 needs calibration images: pass --data (an ImageFolder root or 'digits'), or "
                            "--calib synthetic to calibrate on generated noise")
    from yolo_export.data.datasets import resolve_dataset
    from yolo_export.data.samples import list_split_images

    root = resolve_dataset(args["data"])
    if not list_split_images(root, "train"):
        raise ArgumentError(f"--data {args['data']}: no calibration images in its train (or val) split")
    return str(args["data"])


def plan_output(backend, requested, default: Path, reads=(), force: bool = False) -> Path:
    """Where the artefact goes, decided like ``cp`` before any work, refusing anything that would lose a file:

    - an existing folder receives the artefact under its default name, unless it is itself an artefact of this
      format (then it is replaced); ``.``, ``..`` and folders holding the working directory are never replaced;
    - an existing file is replaced only when it is an artefact of this format (recognised by its metadata), or
      with ``force``; never the source model or a file the command reads;
    - a new name must carry the format's suffix (file formats) or must not look like another format's file.
    """
    if requested in (None, ""):
        target = Path(default)
    else:
        p = Path(requested)
        if p.is_dir() and not (backend.is_dir and _replaceable_dir(backend, p, reads)):
            target = p / Path(default).name
        elif not p.exists() and str(requested).endswith(("/", os.sep)):
            target = p / Path(default).name
        else:
            target = p
            _check_new_name(backend, p)
    _check_target(backend, target, reads, force)
    return target


def _check_new_name(backend, p: Path) -> None:
    title = backend.title or backend.name
    if not backend.is_dir:
        if not p.name.endswith(backend.suffix) or p.name == backend.suffix:
            raise OutputError(f"--output {p}: {title} models are '{backend.suffix}' files "
                              f"(e.g. --output {p.with_name(p.name.split('.')[0] + backend.suffix)})")
        return
    other = [b for b in registry.all_backends() if not b.is_dir and b.suffix and p.name.endswith(b.suffix)]
    if other or p.suffix in (".pt", ".yaml", ".yml", ".xml", ".bin", ".json", ".txt"):
        raise OutputError(f"--output {p}: {title} models are folders (e.g. --output "
                          f"{p.with_name(p.name.split('.')[0] + backend.suffix)}), not a '{p.suffix}' file")


def _check_target(backend, target: Path, reads, force: bool) -> None:
    title = backend.title or backend.name
    if not target.exists() and not target.is_symlink():
        return
    for r, what in reads:
        if _same_or_inside(r, target):
            raise OutputError(f"refusing to replace {target}: it {what}; choose another --output")
    if target.is_symlink():
        raise OutputError(f"refusing to replace {target}: it is a symbolic link; choose another --output")
    if backend.is_dir != target.is_dir():
        kind = "folder" if target.is_dir() else "file"
        raise OutputError(f"refusing to replace the {kind} {target} with a {title} model "
                          f"({'a folder' if backend.is_dir else f'a {backend.suffix} file'}); choose another --output")
    if target.is_dir() and _holds_cwd(target):
        raise OutputError(f"refusing to replace {target}: it holds the working directory")
    if recognise(backend, target):
        if target.is_dir() and (foreign := backend.foreign_files(target)):
            raise OutputError(f"refusing to replace {target}: it holds files no {title} export writes "
                              f"({', '.join(foreign)}); move them out or choose another --output")
        return
    if force and not target.is_dir():
        LOGGER.warning(f"warning: replacing {target} (--force)")
        return
    hint = "" if target.is_dir() else ", or pass --force to replace it"
    raise OutputError(f"refusing to replace {target}: it is not a {title} model; choose another --output{hint}")


def recognise(backend, path: Path) -> bool:
    """Is ``path`` an artefact of ``backend``'s format? Judged by its metadata through the format's own reader (which
    reads files, never runs them), so only models that carry yolo-export / YOLO metadata qualify."""
    try:
        meta = backend.read_metadata(Path(path))
    except Exception:  # noqa: BLE001 - anything unreadable is not an artefact we may replace
        return False
    return isinstance(meta, dict) and bool(meta.get("names")) and meta.get("format", backend.name) == backend.name


def _replaceable_dir(backend, p: Path, reads) -> bool:
    return (not _holds_cwd(p) and not any(_same_or_inside(r, p) for r, _ in reads) and recognise(backend, p)
            and not backend.foreign_files(p, show=1))


def _holds_cwd(p: Path) -> bool:
    try:
        cwd, q = Path.cwd().resolve(), p.resolve()
    except OSError:
        return True
    return q == cwd or q in cwd.parents or q == Path(q.anchor)


def _same_or_inside(read, target: Path) -> bool:
    try:
        r, t = Path(read).resolve(), target.resolve()
    except OSError:
        return False
    return r == t or t in r.parents


def _reads(source, args) -> list[tuple[str, str]]:
    """(path, what it is) for every file or folder the export reads: none of them may be replaced."""
    reads = []
    if source.ckpt_path:
        reads.append((source.ckpt_path, "is (or holds) the source model"))
    if args.get("data") and Path(str(args["data"])).exists():
        reads.append((str(args["data"]), "is (or holds) the --data this command reads"))
    return reads


def _meta_args(args: dict) -> dict:
    return registry.recorded_args(args)


def _output_base(source, args) -> Path:
    p = source.ckpt_path
    if p is None or getattr(source, "zoo_name", None):  # a zoo model lives in the cache: export here
        return Path.cwd() / (getattr(source, "zoo_name", None) or source.model_name or "model")
    p = Path(p)
    return p.with_name(p.stem if p.suffix else p.name)
