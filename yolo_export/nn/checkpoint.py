"""Checkpoints: our safe plain-dict format, and the import of reference-package checkpoints.

Our ``.pt`` is a dict of tensors, numbers, strings, lists and dicts only (``torch.load(weights_only=True)`` reads
it too). A reference YOLOv8-cls checkpoint is a pickled ``ClassificationModel`` object, imported without that
package (``reference_import``). Every file is read by one loader (``safe_load.read_torch_zip``): the zip format
only, its structure checked before anything is parsed, every global through the restricted unpickler's allow-list,
storage sizes checked before allocation, and the data walked within item/depth budgets.
"""

from __future__ import annotations

import datetime as _dt
import io
from pathlib import Path

import torch

from yolo_export.errors import CheckpointError, CheckpointNotFound
from yolo_export.nn.reference_import import RestrictedUnpickler, import_reference, is_reference_model
from yolo_export.nn.safe_load import ItemCounter, plain_data, read_torch_zip

FORMAT = "yolo-export/checkpoint"
# 1: module attributes not recorded (built with BatchNorm eps 1e-3 / momentum 0.03);
# 2: ``yaml["module_attrs"]`` records BatchNorm eps/momentum, activation and dropout p.
FORMAT_VERSION = 2


# --------------------------------------------------------------------------------------------- ours
def save_checkpoint(path: str | Path, model, *, half: bool = True, extra: dict | None = None,
                    preprocess: dict | None = None) -> Path:
    """Write ``model`` (a ClassificationModel) as a plain dict, atomically."""
    from yolo_export._version import __version__
    from yolo_export.utils import atomic_write_bytes

    sd = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
          for k, v in model.state_dict().items()}
    yaml_cfg = {k: v for k, v in model.yaml.items()}
    yaml_cfg["module_attrs"] = model.attrs  # what the modules hold, even if someone set bn.eps directly
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "task": "classify",
        "yaml": _plain(yaml_cfg),
        "names": {int(k): str(v) for k, v in model.names.items()},
        "imgsz": int(getattr(model, "imgsz", 224)),
        "preprocess": _plain(preprocess) if preprocess else None,
        "state_dict": sd,
        "fused": bool(model.is_fused()),
    }
    if extra:
        ckpt.update(_plain(extra))
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _plain(x):
    """Reduce to what weights_only loading accepts: dict/list/tuple/str/int/float/bool/None/tensor."""
    if isinstance(x, dict):
        return {(k if isinstance(k, (str, int)) else str(k)): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None or isinstance(x, torch.Tensor):
        return x
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return str(x)


def load_checkpoint(path: str | Path) -> dict:
    """Read any supported checkpoint and return our plain-dict form (always with ``state_dict`` in fp32)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFound(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    raw = read_torch_zip(path, RestrictedUnpickler)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a checkpoint dict")
    try:
        if raw.get("format") == FORMAT:
            return _ours(path, raw)
        model = raw["ema"] if raw.get("ema") is not None else raw.get("model")
        if is_reference_model(model):
            ck = {"format": FORMAT, "format_version": FORMAT_VERSION, **import_reference(path, raw)}
            return _ours(path, ck)
        if isinstance(model, dict) and model.get("format") == FORMAT:
            return _ours(path, model)
    except RecursionError:
        raise CheckpointError(f"{path}: the checkpoint nests too deeply") from None
    if model is not None:
        raise CheckpointError(f"{path} is not a YOLOv8 classification checkpoint (its model is a "
                              f"{type(model).__name__})")
    keys = ", ".join(k if isinstance(k, str) else f"<{type(k).__name__}>" for k in list(raw)[:8])
    raise CheckpointError(f"{path} is not a YOLOv8-cls checkpoint (keys: {keys})")


def _ours(path: Path, ck: dict) -> dict:
    """Our format, checked: plain data only (within budgets), a tensor state dict, sane sizes; weights in fp32."""
    budget = ItemCounter(str(path))
    sd = ck.get("state_dict")
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CheckpointError(f"{path}: 'state_dict' is not a table of named tensors")
    out = {k: plain_data(v, budget, str(k), strict=True) for k, v in ck.items() if k != "state_dict"}
    if not isinstance(out.get("yaml"), dict):
        raise CheckpointError(f"{path}: the checkpoint carries no architecture ('yaml')")
    imgsz = out.get("imgsz")
    if imgsz is not None and (isinstance(imgsz, bool) or not isinstance(imgsz, int) or not 1 <= imgsz <= 16384):
        raise CheckpointError(f"{path}: imgsz {imgsz!r} is not an image size in 1..16384")
    names = out.get("names")
    if names is not None and not (isinstance(names, dict) and all(isinstance(v, str) for v in names.values())):
        raise CheckpointError(f"{path}: 'names' is not a table of class names")
    out["state_dict"] = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    return out


def checkpoint_attrs(ckpt: dict) -> dict:
    """The module attributes a checkpoint was built with: recorded since format version 2, legacy values before."""
    from yolo_export.nn.model import ATTRS_KEY, LEGACY_ATTRS

    version = ckpt.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format version {version!r} is newer than this yolo-export reads "
                              f"({FORMAT_VERSION}); upgrade yolo-export")
    attrs = (ckpt.get("yaml") or {}).get(ATTRS_KEY)
    if version >= 2:
        if not isinstance(attrs, dict):
            raise CheckpointError(f"checkpoint (format version {version}) records no module attributes "
                                  f"('yaml.{ATTRS_KEY}')")
        return dict(attrs)
    if ckpt.get("source") == "ultralytics":
        from yolo_export.utils import LOGGER

        LOGGER.warning("warning: this checkpoint was converted from a reference-package file by an earlier yolo-export "
                       "that assumed BatchNorm eps 1e-3 (the reference's is 1e-5); it loads as it did then; convert "
                       "the original file again to get the reference's outputs")
    dropout = (ckpt.get("train_args") or {}).get("dropout") or 0.0
    return {**LEGACY_ATTRS, "dropout": float(dropout) if isinstance(dropout, (int, float)) else 0.0}


def _check_weights_fit(mine: dict, theirs: dict, arch: str) -> None:
    missing = [k for k in mine if k not in theirs]
    unexpected = [k for k in theirs if k not in mine]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint weights do not fit the {arch} architecture ({len(missing)} missing, "
                              f"{len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[0]})")
    for k, v in theirs.items():
        if mine[k].shape != v.shape:
            raise CheckpointError(f"checkpoint weight {k} has shape {tuple(v.shape)}, the {arch} architecture "
                                  f"needs {tuple(mine[k].shape)}")


def build_from_checkpoint(ckpt: dict):
    """A ClassificationModel (fp32, eval) from our plain-dict checkpoint."""
    from yolo_export.nn.model import ATTRS_KEY, ClassificationModel

    cfg = dict(ckpt["yaml"])
    cfg[ATTRS_KEY] = checkpoint_attrs(ckpt)
    args = dict(ch=cfg.get("channels", 3), nc=cfg.get("nc"), names=ckpt.get("names"))
    with torch.device("meta"):  # the architecture first, without memory: the file must hold all of its weights
        meta = ClassificationModel(dict(cfg), **args)
        if ckpt.get("fused"):
            meta.fuse()
    _check_weights_fit(meta.state_dict(), ckpt["state_dict"], cfg.get("yaml_file", "model"))
    model = _materialise(meta, ckpt["state_dict"])
    if model is None:  # something the state dict does not cover: build it for real (random init, then the weights)
        model = ClassificationModel(cfg, **args)
        if ckpt.get("fused"):
            model.fuse()
        model.load_state_dict(ckpt["state_dict"], strict=True)
    model.imgsz = int(ckpt.get("imgsz") or 224)
    model.preprocess = ckpt.get("preprocess")
    model.train_args = ckpt.get("train_args")
    model.metrics = ckpt.get("metrics")
    return model.float().eval()


def _materialise(meta, state_dict: dict):
    """The checked meta-device model given real memory and filled from ``state_dict`` (copied, so the model never
    shares memory with the checkpoint dict), skipping the random initialisation that the weights would overwrite
    (most of a large model's build time). None if any tensor of the model is not in the state dict."""
    named = dict(meta.named_parameters(remove_duplicate=False)) | dict(meta.named_buffers(remove_duplicate=False))
    if set(named) - set(state_dict):
        return None
    model = meta.to_empty(device="cpu")
    model.load_state_dict(state_dict, strict=True)
    for m in model.modules():
        if any(isinstance(v, torch.Tensor) and v.is_meta for v in vars(m).values()):
            return None
    return model


def save_ultralytics_as_ours(src: str | Path, dst: str | Path) -> Path:
    """Convert a reference-package checkpoint into our safe format (fp16 weights as they came)."""
    ckpt = load_checkpoint(src)
    if ckpt.get("source") != "ultralytics":
        raise CheckpointError(f"{src} is not a reference-package checkpoint")
    model = build_from_checkpoint(ckpt)
    return save_checkpoint(dst, model, half=True, preprocess=ckpt["preprocess"],
                           extra={"source": "ultralytics", "train_args": ckpt.get("train_args"),
                                  "metrics": ckpt.get("metrics")})
