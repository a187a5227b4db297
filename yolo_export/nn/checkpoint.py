"""Checkpoints: our safe plain-dict format, and a restricted importer for Ultralytics-format files.

Our ``.pt`` is a dict of tensors, numbers, strings, lists and dicts only, so ``torch.load(weights_only=True)``
reads it. An Ultralytics YOLOv8-cls checkpoint is a pickled ``ClassificationModel`` object; we read it without
that package through an unpickler that admits only the globals such a file contains (mapped to inert stand-ins
defined here) and refuses every other global before anything is called.
"""

from __future__ import annotations

import datetime as _dt
import enum
import io
import pickle
import zipfile
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from yolo_export.errors import CheckpointError

FORMAT = "yolo-export/checkpoint"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------- ours
def save_checkpoint(path: str | Path, model, *, half: bool = True, extra: dict | None = None,
                    preprocess: dict | None = None) -> Path:
    """Write ``model`` (a ClassificationModel) as a plain dict, atomically."""
    from yolo_export import __version__
    from yolo_export.utils import atomic_write_bytes

    sd = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
          for k, v in model.state_dict().items()}
    yaml_cfg = {k: v for k, v in model.yaml.items()}
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
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (not a zip archive; truncated or another format?)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - the safe loader refuses anything but plain data
        if not _is_unsafe_pickle_error(e):
            raise CheckpointError(f"cannot read checkpoint {path}: {_one_line(e)}") from None
        ckpt = load_ultralytics(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    if ckpt.get("format") == FORMAT:
        ckpt["state_dict"] = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
        return ckpt
    if "model" in ckpt and isinstance(ckpt.get("model"), dict) and "state_dict" in ckpt["model"]:
        return ckpt["model"]
    raise CheckpointError(f"{path} is not a YOLOv8-cls checkpoint (keys: {', '.join(map(str, list(ckpt)[:8]))})")


def _is_unsafe_pickle_error(e: Exception) -> bool:
    return isinstance(e, pickle.UnpicklingError) or "weights_only" in str(e) or "Unsupported global" in str(e)


def _one_line(e: Exception) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


def build_from_checkpoint(ckpt: dict):
    """A ClassificationModel (fp32, eval) from our plain-dict checkpoint."""
    from yolo_export.nn.model import ClassificationModel

    cfg = dict(ckpt["yaml"])
    model = ClassificationModel(cfg, ch=cfg.get("channels", 3), nc=cfg.get("nc"), names=ckpt.get("names"))
    if ckpt.get("fused"):
        model.fuse()
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint weights do not fit the {cfg.get('yaml_file', 'model')} architecture "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[0]})"
        )
    model.imgsz = int(ckpt.get("imgsz") or 224)
    model.preprocess = ckpt.get("preprocess")
    model.train_args = ckpt.get("train_args")
    model.metrics = ckpt.get("metrics")
    return model.float().eval()


# ---------------------------------------------------------------------------- Ultralytics importer
class _Stub(nn.Module):
    """An inert stand-in for a pickled Ultralytics module: nn.Module's own __setstate__ restores its fields."""

    def forward(self, *a, **k):  # pragma: no cover - never run; we rebuild our own model from the weights
        raise CheckpointError("imported Ultralytics modules are not runnable; use build_from_checkpoint")


class _Obj:
    """An inert stand-in for a plain object (torchvision transforms, namespaces): attributes only."""

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def _stub_class(module: str, name: str, base):
    return type(name, (base,), {"__module__": "yolo_export.nn.checkpoint._imported." + module})


_ULTRA_MODULES = {
    "ultralytics.nn.tasks": ["ClassificationModel", "BaseModel"],
    "ultralytics.nn.modules.conv": ["Conv", "Concat"],
    "ultralytics.nn.modules.block": ["C2f", "Bottleneck", "DFL"],
    "ultralytics.nn.modules.head": ["Classify"],
}
_ULTRA_OBJECTS = {
    "ultralytics.utils": ["IterableSimpleNamespace"],
    "ultralytics.cfg": ["IterableSimpleNamespace"],
    "torchvision.transforms.transforms": ["Compose", "Resize", "CenterCrop", "ToTensor", "Normalize"],
    "ultralytics.data.augment": ["CenterCrop", "ToTensor", "ClassifyLetterBox"],
}

_TORCH_ALLOWED = {
    "torch.nn.modules.conv": ["Conv2d"],
    "torch.nn.modules.batchnorm": ["BatchNorm2d"],
    "torch.nn.modules.activation": ["SiLU"],
    "torch.nn.modules.container": ["Sequential", "ModuleList"],
    "torch.nn.modules.dropout": ["Dropout"],
    "torch.nn.modules.linear": ["Linear", "Identity"],
    "torch.nn.modules.pooling": ["AdaptiveAvgPool2d"],
    "torch._utils": ["_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state"],
    "torch": ["HalfStorage", "FloatStorage", "LongStorage", "IntStorage", "BFloat16Storage", "DoubleStorage",
              "ByteStorage", "BoolStorage", "float16", "float32", "Size", "device"],
    "collections": ["OrderedDict"],
    "builtins": ["set", "frozenset", "slice", "complex"],
    "numpy.core.multiarray": ["scalar", "_reconstruct"],
    "numpy._core.multiarray": ["scalar", "_reconstruct"],
    "numpy": ["dtype", "ndarray"],
}

_STUBS: dict[tuple[str, str], object] = {}
for _mod, _names in _ULTRA_MODULES.items():
    for _n in _names:
        _STUBS[(_mod, _n)] = _stub_class(_mod, _n, _Stub)
for _mod, _names in _ULTRA_OBJECTS.items():
    for _n in _names:
        _STUBS[(_mod, _n)] = _stub_class(_mod, _n, _Obj)
_STUBS[("torchvision.transforms.functional", "InterpolationMode")] = InterpolationMode


def _find_allowed(module: str, name: str):
    if (module, name) in _STUBS:
        return _STUBS[(module, name)]
    if name in _TORCH_ALLOWED.get(module, ()):
        if module.startswith("numpy"):
            import numpy as np

            if name in ("scalar", "_reconstruct"):
                core = getattr(np, "_core", None) or np.core
                return getattr(core.multiarray, name)
            return getattr(np, name)
        mod = __import__(module, fromlist=[name])
        return getattr(mod, name)
    raise CheckpointError(
        f"refused to load: the checkpoint asks for {module}.{name}, which a YOLOv8-cls checkpoint never contains "
        "(it may run code; nothing from it was executed)"
    )


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # Protocol-2 pickles (torch.save's default) name builtins "__builtin__" (e.g. every nn.Module's
        # _non_persistent_buffers_set); pickle's own find_class maps such Python 2 names, an override must too.
        import _compat_pickle

        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        return _find_allowed(module, name)


_restricted_pickle = ModuleType("yolo_export_restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler
_restricted_pickle.load = pickle.load
_restricted_pickle.__name__ = "yolo_export_restricted_pickle"


def load_ultralytics(path: str | Path) -> dict:
    """Read an Ultralytics YOLOv8-cls checkpoint into our plain-dict form, without that package."""
    path = Path(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read checkpoint {path}: {_one_line(e)}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} is not a checkpoint dict")
    model = raw.get("ema") or raw.get("model")
    if model is None or type(model).__name__ != "ClassificationModel":
        kind = type(model).__name__ if model is not None else "no model"
        raise CheckpointError(f"{path} is not a YOLOv8 classification checkpoint ({kind})")
    cfg = dict(getattr(model, "yaml", None) or {})
    if not cfg.get("backbone"):
        raise CheckpointError(f"{path}: the model carries no architecture ('yaml') to rebuild it from")
    sd = {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    names = getattr(model, "names", None) or raw.get("names")
    train_args = raw.get("train_args") or {}
    if not isinstance(train_args, dict):
        train_args = dict(getattr(train_args, "__dict__", {}))
    imgsz = train_args.get("imgsz") or 224
    if isinstance(imgsz, (list, tuple)):
        imgsz = imgsz[0]
    preprocess = _transforms_to_preprocess(getattr(model, "transforms", None), int(imgsz))
    fused = not any(k.endswith(".bn.weight") for k in sd)
    from yolo_export.nn.model import normalise_names

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": "ultralytics",
        "version": str(raw.get("version", "")),
        "date": str(raw.get("date", "")),
        "task": "classify",
        "yaml": _plain({k: v for k, v in cfg.items()}),
        "names": normalise_names(names, cfg.get("nc", len(names or {}))) if names else None,
        "imgsz": int(preprocess["crop"]),
        "preprocess": preprocess,
        "state_dict": sd,
        "fused": fused,
        "train_args": _plain(train_args),
        "metrics": _plain(raw.get("train_metrics") or {}),
    }


def _transforms_to_preprocess(transforms, imgsz: int) -> dict:
    from yolo_export.data.transforms import default_preprocess

    pp = default_preprocess(imgsz)
    for t in getattr(transforms, "transforms", None) or []:
        kind = type(t).__name__
        if kind == "Resize":
            size = t.__dict__.get("size")
            pp["resize"] = int(size if isinstance(size, int) else min(size))
            mode = t.__dict__.get("interpolation")
            if isinstance(mode, InterpolationMode):
                pp["interpolation"] = mode.value
        elif kind == "CenterCrop":
            size = t.__dict__.get("size")
            pp["crop"] = int(size if isinstance(size, int) else size[0])
        elif kind == "Normalize":
            pp["mean"] = [float(v) for v in t.__dict__.get("mean")]
            pp["std"] = [float(v) for v in t.__dict__.get("std")]
    return pp


def save_ultralytics_as_ours(src: str | Path, dst: str | Path) -> Path:
    """Convert an Ultralytics-format checkpoint into our safe format (fp16 weights as they came)."""
    ckpt = load_ultralytics(src)
    model = build_from_checkpoint(ckpt)
    return save_checkpoint(dst, model, half=True, preprocess=ckpt["preprocess"],
                           extra={"source": "ultralytics", "train_args": ckpt.get("train_args"),
                                  "metrics": ckpt.get("metrics")})
