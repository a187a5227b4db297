"""Import a checkpoint written by the reference package (a pickled ``ClassificationModel``) without that package.

The restricted unpickler admits only the globals such a file contains, mapped to inert stand-ins (``_Stub``
modules whose ``__dict__`` holds the pickled fields, ``_Obj`` plain objects) or to a few harmless torch classes and
functions; every other global is refused before anything is called. The stand-ins are never run: their weights are
copied into a model built here, and every module attribute that changes the computation is taken from them
(BatchNorm eps/momentum, activation, dropout p) or compared with what the model built here does (convolution
geometry, pooling, head shape, shortcuts). A value this builder cannot reproduce is refused with one line naming it.
"""

from __future__ import annotations

import enum
import pickle
from pathlib import Path

from torch import nn

from yolo_export.errors import CheckpointError
from yolo_export.nn.safe_load import ItemCounter, plain_data, storage_types


class _Stub(nn.Module):
    """An inert stand-in for a pickled reference module: nn.Module's own __setstate__ restores its fields."""

    def forward(self, *a, **k):  # pragma: no cover - never run; we rebuild our own model from the weights
        raise CheckpointError("imported reference modules are not runnable; use build_from_checkpoint")


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
    return type(name, (base,), {"__module__": "yolo_export.nn.reference_import._imported." + module})


_REF_MODULES = {
    "ultralytics.nn.tasks": ["ClassificationModel", "BaseModel"],
    "ultralytics.nn.modules.conv": ["Conv", "Concat"],
    "ultralytics.nn.modules.block": ["C2f", "Bottleneck", "DFL"],
    "ultralytics.nn.modules.head": ["Classify"],
    # early 8.0 releases kept every block in one module, ultralytics/nn/modules.py
    "ultralytics.nn.modules": ["Conv", "Concat", "C2f", "Bottleneck", "DFL", "Classify"],
}
_REF_OBJECTS = {
    "ultralytics.utils": ["IterableSimpleNamespace"],
    "ultralytics.cfg": ["IterableSimpleNamespace"],
    "ultralytics.yolo.utils": ["IterableSimpleNamespace"],  # the early 8.0 package layout
    "torchvision.transforms.transforms": ["Compose", "Resize", "CenterCrop", "ToTensor", "Normalize"],
    "ultralytics.data.augment": ["CenterCrop", "ToTensor", "ClassifyLetterBox"],
}
# Real torch classes whose instances are only read (never called); activations and pools beyond the ones the model
# uses are admitted so that a file using them gets a clear "not supported" instead of "may run code".
_TORCH_ALLOWED = {
    "torch.nn.modules.conv": ["Conv2d"],
    "torch.nn.modules.batchnorm": ["BatchNorm2d"],
    "torch.nn.modules.activation": ["SiLU", "ReLU", "ReLU6", "LeakyReLU", "Hardswish", "Hardsigmoid", "GELU", "Mish",
                                    "Sigmoid", "Tanh", "ELU", "PReLU"],
    "torch.nn.modules.container": ["Sequential", "ModuleList"],
    "torch.nn.modules.dropout": ["Dropout"],
    "torch.nn.modules.linear": ["Linear", "Identity"],
    "torch.nn.modules.pooling": ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d", "MaxPool2d"],
    "torch._utils": ["_rebuild_tensor_v2"],
    "torch": ["float16", "float32", "bfloat16", "float64", "int64", "int32", "uint8", "bool", "Size", "device"],
    "collections": ["OrderedDict"],
    "builtins": ["set", "frozenset", "slice", "complex"],
    "numpy.core.multiarray": ["scalar"],
    "numpy._core.multiarray": ["scalar"],
    "numpy": ["dtype", "ndarray"],
}

_STUBS: dict[tuple[str, str], object] = {}
for _mod, _names in _REF_MODULES.items():
    for _n in _names:
        _STUBS[(_mod, _n)] = _stub_class(_mod, _n, _Stub)
for _mod, _names in _REF_OBJECTS.items():
    for _n in _names:
        _STUBS[(_mod, _n)] = _stub_class(_mod, _n, _Obj)
_STUBS[("torchvision.transforms.functional", "InterpolationMode")] = InterpolationMode
for _n, _t in storage_types().items():
    _STUBS[("torch", _n)] = _t


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    """torch._utils._rebuild_parameter(_with_state) without the pickled hooks or Python attributes."""
    return nn.Parameter(data, requires_grad)


def _np_reconstruct(cls, shape, dtype):
    """numpy's ndarray pickling always starts from an empty array; refuse any other shape before allocating."""
    import numpy as np

    if cls is not np.ndarray or tuple(shape) != (0,):
        raise CheckpointError("refused to load: a numpy array reconstruction with a non-empty initial shape")
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct(np.ndarray, (0,), dtype)


_STUBS[("torch._utils", "_rebuild_parameter")] = _rebuild_parameter
_STUBS[("torch._utils", "_rebuild_parameter_with_state")] = _rebuild_parameter
_STUBS[("numpy.core.multiarray", "_reconstruct")] = _np_reconstruct
_STUBS[("numpy._core.multiarray", "_reconstruct")] = _np_reconstruct


def _find_allowed(module: str, name: str):
    if (module, name) in _STUBS:
        return _STUBS[(module, name)]
    if name in _TORCH_ALLOWED.get(module, ()):
        if module.startswith("numpy"):
            import numpy as np

            if name == "scalar":
                core = getattr(np, "_core", None) or np.core
                return core.multiarray.scalar
            return getattr(np, name)
        mod = __import__(module, fromlist=[name])
        return getattr(mod, name)
    raise CheckpointError(
        f"refused to load: the checkpoint asks for {module}.{name}, which a YOLOv8-cls checkpoint never contains "
        "(it may run code; nothing from it was executed)"
    )


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # Protocol-2 pickles (torch.save's default) name builtins "__builtin__" (e.g. every nn.Module's
        # _non_persistent_buffers_set); pickle's own find_class maps such Python 2 names, an override must too.
        import _compat_pickle

        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        return _find_allowed(module, name)


def is_reference_model(obj) -> bool:
    return isinstance(obj, _Stub) and type(obj).__name__ == "ClassificationModel"


# ------------------------------------------------------------------------------------------ the module tree
def walk_modules(root, where: str, limit: int = 100_000) -> list[tuple[str, nn.Module]]:
    """(name, module) for every distinct module under ``root``, read from ``_modules`` only (no hooks, no methods of
    the file's objects), with a count and depth budget."""
    out, seen, stack = [], set(), [("", root, 0)]
    while stack:
        name, m, depth = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        if not isinstance(m, nn.Module) or depth > 64 or len(out) >= limit:
            raise CheckpointError(f"{where}: malformed module tree at '{name or 'model'}'")
        out.append((name, m))
        children = m.__dict__.get("_modules")
        if not isinstance(children, dict):
            raise CheckpointError(f"{where}: module '{name or 'model'}' has no child table")
        for k, c in reversed(list(children.items())):
            if c is not None:
                stack.append((f"{name}.{k}" if name else str(k), c, depth + 1))
    return out


def stub_state_dict(mods: list[tuple[str, nn.Module]], where: str) -> dict:
    """The persistent parameters and buffers, read from each module's tables (fp32 floats)."""
    import torch

    sd = {}
    for name, m in mods:
        skip = m.__dict__.get("_non_persistent_buffers_set") or set()
        for table in ("_parameters", "_buffers"):
            for k, v in (m.__dict__.get(table) or {}).items():
                if v is None or (table == "_buffers" and k in skip):
                    continue
                if not isinstance(v, torch.Tensor):
                    raise CheckpointError(f"{where}: {name}.{k} is a {type(v).__name__}, not a tensor")
                key = f"{name}.{k}" if name else k
                sd[key] = v.detach().float() if v.is_floating_point() else v.detach()
    return sd


def module_attrs(mods: list[tuple[str, nn.Module]], where: str) -> dict:
    """BatchNorm eps/momentum, activation and dropout p, from the file's modules; one value each, or refused."""
    from yolo_export.nn.model import ACTIVATIONS, DEFAULT_ATTRS

    found: dict[str, dict] = {"bn": {}, "act": {}, "dropout": {}}
    for name, m in mods:
        if isinstance(m, nn.BatchNorm2d):
            found["bn"].setdefault((m.__dict__.get("eps"), m.__dict__.get("momentum")), name)
            if m.__dict__.get("affine") is not True or m.__dict__.get("track_running_stats") is not True:
                raise CheckpointError(f"{where}: BatchNorm {name} without affine weights or running statistics is "
                                      "not supported")
        elif isinstance(m, nn.Dropout):
            found["dropout"].setdefault(m.__dict__.get("p"), name)
        elif name.endswith(".act") and type(m).__name__ != "Identity":
            found["act"].setdefault(type(m).__name__, name)
    for kind, values in found.items():
        if len(values) > 1:
            shown = "; ".join(f"{v} in {n}" for v, n in list(values.items())[:2])
            raise CheckpointError(f"{where}: the layers use different {kind} settings ({shown}); this model builder "
                                  "uses one for all layers, so it is refused")
    bad = [a for a in found["act"] if a not in ACTIVATIONS]
    if bad:
        raise CheckpointError(f"{where}: activation {bad[0]} (in {found['act'][bad[0]]}) is not supported; this "
                              f"model builds {', '.join(ACTIVATIONS)} only, so the file is refused rather than run "
                              "with another activation")
    attrs = dict(DEFAULT_ATTRS)
    if found["bn"]:
        attrs["bn_eps"], attrs["bn_momentum"] = next(iter(found["bn"]))
    if found["dropout"]:
        attrs["dropout"] = next(iter(found["dropout"]))
    return attrs


_COMPARED = {
    nn.Conv2d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                "padding_mode"),
    nn.Linear: ("in_features", "out_features"),
    nn.BatchNorm2d: ("num_features",),
    nn.AdaptiveAvgPool2d: ("output_size",),
    nn.Dropout: ("p",),
}
_COMPARED_BY_NAME = {"Bottleneck": ("add",), "C2f": ("c",)}


def _norm(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


def compare_structure(theirs: list[tuple[str, nn.Module]], ours: nn.Module, where: str) -> None:
    """Every module of the file is where the model built here has it, with the same computation attributes."""
    mine = dict(walk_modules(ours, where))
    file = dict(theirs)
    for name in sorted(mine.keys() | file.keys()):
        o, t = mine.get(name), file.get(name)
        if o is None or t is None:
            side = "the file has" if o is None else "the file lacks"
            kind = type(t if o is None else o).__name__
            raise CheckpointError(f"{where}: {side} module {name} ({kind}) that the model its yaml describes "
                                  f"{'lacks' if o is None else 'has'}; refused")
        if type(o).__name__ != type(t).__name__:
            raise CheckpointError(f"{where}: module {name} is a {type(t).__name__} in the file, a {type(o).__name__} "
                                  "in the model built from its yaml; refused")
        fields = _COMPARED.get(type(o), ()) + _COMPARED_BY_NAME.get(type(o).__name__, ())
        for a in fields:
            if _norm(t.__dict__.get(a)) != _norm(o.__dict__.get(a)):
                raise CheckpointError(f"{where}: {name}.{a} is {t.__dict__.get(a)!r} in the file but "
                                      f"{o.__dict__.get(a)!r} in the model built from its yaml; refused")
        if isinstance(o, (nn.Conv2d, nn.Linear)):
            has = (t.__dict__.get("_parameters") or {}).get("bias") is not None
            if has != (o.bias is not None):
                raise CheckpointError(f"{where}: {name} {'has' if has else 'lacks'} a bias unlike the model built "
                                      "from its yaml; refused")


def import_reference(path: Path, raw: dict) -> dict:
    """The fields of our checkpoint dict, from a reference checkpoint's unpickled dict (model already checked)."""
    import torch

    from yolo_export.nn.model import ATTRS_KEY, ClassificationModel, normalise_names

    where = str(path)
    model = raw["ema"] if raw.get("ema") is not None else raw.get("model")
    budget = ItemCounter(where)
    cfg = plain_data(model.__dict__.get("yaml"), budget, "yaml", strict=False)
    if not isinstance(cfg, dict) or not cfg.get("backbone"):
        raise CheckpointError(f"{where}: the model carries no architecture ('yaml') to rebuild it from")
    cfg.pop("ch", None) if "channels" in cfg else cfg.update(channels=cfg.pop("ch", 3))
    mods = walk_modules(model, where)
    sd = stub_state_dict(mods, where)
    fused = not any(k.endswith(".bn.weight") for k in sd)
    cfg[ATTRS_KEY] = module_attrs(mods, where)
    with torch.device("meta"):  # the model its yaml describes, built without allocating (budgets apply)
        ours = ClassificationModel(dict(cfg), ch=cfg.get("channels", 3), nc=cfg.get("nc"))
        if fused:
            ours.fuse()
    compare_structure(mods, ours, where)
    names = plain_data(model.__dict__.get("names") or raw.get("names"), budget, "names", strict=False)
    train_args = plain_data(raw.get("train_args") or {}, budget, "train_args", strict=False)
    train_args = train_args if isinstance(train_args, dict) else {}
    imgsz = train_args.get("imgsz") or 224
    imgsz = imgsz[0] if isinstance(imgsz, list) and imgsz else imgsz
    preprocess = transforms_to_preprocess(model.__dict__.get("transforms"), imgsz if isinstance(imgsz, int) else 224)
    return {
        "source": "ultralytics",
        "version": str(plain_data(raw.get("version", ""), budget, "version", strict=False)),
        "date": str(plain_data(raw.get("date", ""), budget, "date", strict=False)),
        "task": "classify",
        "yaml": cfg,
        "names": normalise_names(names, int(cfg.get("nc") or len(names))) if names else None,
        "imgsz": int(preprocess["crop"]),
        "preprocess": preprocess,
        "state_dict": sd,
        "fused": fused,
        "train_args": train_args,
        "metrics": plain_data(raw.get("train_metrics") or {}, budget, "train_metrics", strict=False),
    }


def transforms_to_preprocess(transforms, imgsz: int) -> dict:
    from yolo_export.data.transforms import default_preprocess

    pp = default_preprocess(imgsz)
    steps = getattr(transforms, "__dict__", {}).get("transforms") if isinstance(transforms, _Obj) else None
    for t in steps if isinstance(steps, list) else []:
        kind, d = type(t).__name__, getattr(t, "__dict__", {})
        try:
            if kind == "Resize":
                size = d.get("size")
                pp["resize"] = int(size if isinstance(size, int) else min(size))
                if isinstance(d.get("interpolation"), InterpolationMode):
                    pp["interpolation"] = d["interpolation"].value
            elif kind == "CenterCrop":
                size = d.get("size")
                pp["crop"] = int(size if isinstance(size, int) else size[0])
            elif kind == "Normalize":
                pp["mean"] = [float(v) for v in d.get("mean")][:4]
                pp["std"] = [float(v) for v in d.get("std")][:4]
        except (TypeError, ValueError, IndexError):
            raise CheckpointError(f"the checkpoint's {kind} transform has unreadable fields") from None
    return pp

