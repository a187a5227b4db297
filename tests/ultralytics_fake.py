"""Build a checkpoint in the Ultralytics YOLOv8-cls file layout, without that package, for tests.

Such a file is a pickled ``ultralytics.nn.tasks.ClassificationModel`` object (children ``Conv``, ``C2f``,
``Bottleneck``, ``Classify`` from ``ultralytics.nn.modules.*``), fp16 weights, with torchvision eval transforms
attached, inside a dict with the trainer's bookkeeping keys. We register throw-away modules under those import
names in ``sys.modules`` just long enough for ``torch.save`` to pickle the objects by those names, copy the weights
of one of our own models into them, and remove the fakes again before anything loads the file (so the loader
under test cannot lean on them).

    from tests.ultralytics_fake import make_ultralytics_checkpoint
    make_ultralytics_checkpoint(path, model)        # model: our ClassificationModel (or a YOLO facade)
"""

from __future__ import annotations

import contextlib
import copy
import enum
import sys
import types
from pathlib import Path

_FAKE_CLASSES = {
    "ultralytics.nn.tasks": ["ClassificationModel"],
    "ultralytics.nn.modules.conv": ["Conv"],
    "ultralytics.nn.modules.block": ["C2f", "Bottleneck"],
    "ultralytics.nn.modules.head": ["Classify"],
}
_PACKAGES = ["ultralytics", "ultralytics.nn", "ultralytics.nn.modules"]
_TV_OBJECTS = ["Compose", "ToTensor"]  # plain objects in torchvision
_TV_MODULES = ["Resize", "CenterCrop", "Normalize"]  # torch.nn.Module subclasses in torchvision


def _fake_modules() -> dict[str, types.ModuleType]:
    from torch import nn

    mods: dict[str, types.ModuleType] = {}
    for name in _PACKAGES:
        m = types.ModuleType(name)
        m.__path__ = []  # a package, so that dotted imports of its children resolve through sys.modules
        mods[name] = m
    for modname, classes in _FAKE_CLASSES.items():
        m = mods.setdefault(modname, types.ModuleType(modname))
        for cls in classes:
            setattr(m, cls, type(cls, (nn.Module,), {"__module__": modname, "__qualname__": cls}))

    tv = "torchvision.transforms.transforms"
    m = types.ModuleType(tv)
    for cls in _TV_OBJECTS:
        setattr(m, cls, type(cls, (), {"__module__": tv, "__qualname__": cls}))
    for cls in _TV_MODULES:
        setattr(m, cls, type(cls, (nn.Module,), {"__module__": tv, "__qualname__": cls}))
    mods[tv] = m

    fn = "torchvision.transforms.functional"
    f = types.ModuleType(fn)
    mode = enum.Enum("InterpolationMode", {"NEAREST": "nearest", "BILINEAR": "bilinear", "BICUBIC": "bicubic"})
    mode.__module__, mode.__qualname__ = fn, "InterpolationMode"
    f.InterpolationMode = mode
    mods[fn] = f
    for pkg in ("torchvision", "torchvision.transforms"):
        p = types.ModuleType(pkg)
        p.__path__ = []
        mods[pkg] = p
    return mods


@contextlib.contextmanager
def _installed(mods: dict[str, types.ModuleType]):
    """Put the fakes in sys.modules (shadowing any real package) and restore exactly what was there after."""
    saved = {k: sys.modules[k] for k in mods if k in sys.modules}
    sys.modules.update(mods)
    try:
        yield
    finally:
        for k in mods:
            sys.modules.pop(k, None)
        sys.modules.update(saved)


def _as_ultralytics(model, mods):
    """A deep copy of our model whose modules are re-classed to the fake Ultralytics classes (same children)."""
    from yolo_export.nn import modules as ours

    ours_to_fake = {
        ours.Conv: mods["ultralytics.nn.modules.conv"].Conv,
        ours.C2f: mods["ultralytics.nn.modules.block"].C2f,
        ours.Bottleneck: mods["ultralytics.nn.modules.block"].Bottleneck,
        ours.Classify: mods["ultralytics.nn.modules.head"].Classify,
    }
    m = copy.deepcopy(model).cpu()
    for sub in m.modules():
        fake = ours_to_fake.get(type(sub))
        if fake is not None:
            sub.__class__ = fake
    m.__class__ = mods["ultralytics.nn.tasks"].ClassificationModel
    # Attributes the real object carries, and none of ours that it does not.
    for attr in ("imgsz", "preprocess", "train_args", "metrics"):
        m.__dict__.pop(attr, None)
    yaml_cfg = {k: v for k, v in m.yaml.items() if k not in ("channels", "module_attrs")}
    yaml_cfg["ch"] = int(m.yaml.get("channels", 3))
    m.yaml = yaml_cfg
    m.task = "classify"
    m.pt_path = "yolov8n-cls.pt"
    return m


def _transforms(mods, imgsz: int, resize: int, mean, std):
    tv = mods["torchvision.transforms.transforms"]
    mode = mods["torchvision.transforms.functional"].InterpolationMode

    def obj(cls, **attrs):
        o = cls()
        o.__dict__.update(attrs)
        return o

    return obj(tv.Compose, transforms=[
        obj(tv.Resize, size=resize, interpolation=mode.BILINEAR, max_size=None, antialias=True),
        obj(tv.CenterCrop, size=(imgsz, imgsz)),
        obj(tv.ToTensor),
        obj(tv.Normalize, mean=tuple(mean), std=tuple(std), inplace=False),
    ])


def make_ultralytics_checkpoint(path: str | Path, model, *, imgsz: int | None = None, resize: int | None = None,
                                mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), epochs: int = 100,
                                bn_eps: float | None = None, bn_momentum: float | None = None, act=None,
                                edit=None, extra: dict | None = None) -> None:
    """Write ``model`` (our ClassificationModel or a YOLO facade) to ``path`` in the Ultralytics file layout.

    The weights are stored in fp16 as released files have them; ``imgsz``/``resize`` set the attached eval
    transforms (default: the model's ``imgsz``, else 224, resize = imgsz). The BatchNorm layers keep the eps and
    momentum the model has (the reference classification model's are PyTorch's defaults, 1e-5 / 0.1) unless
    ``bn_eps``/``bn_momentum`` set others; ``act`` (an ``nn.Module``) replaces every Conv's activation; ``edit``
    (a function of the fake model) changes anything else before it is pickled; ``extra`` replaces top-level keys.
    """
    import torch

    model = getattr(model, "model", None) if not isinstance(model, torch.nn.Module) else model
    imgsz = int(imgsz or getattr(model, "imgsz", None) or 224)
    resize = int(resize or imgsz)
    mods = _fake_modules()
    with _installed(mods):
        fake = _as_ultralytics(model, mods)
        for m in fake.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps = m.eps if bn_eps is None else bn_eps
                m.momentum = m.momentum if bn_momentum is None else bn_momentum
            if act is not None and type(m).__name__ == "Conv":
                m.act = act
        if edit is not None:
            edit(fake)
        fake.transforms = _transforms(mods, imgsz, resize, mean, std)
        fake.args = {"task": "classify", "imgsz": imgsz, "model": "yolov8n-cls.yaml", "epochs": epochs}
        fake = fake.half().eval()
        ckpt = {
            "date": "2024-01-01T00:00:00.000000",
            "version": "8.3.0",
            "license": "AGPL-3.0 License (https://ultralytics.com/license)",
            "docs": "https://docs.ultralytics.com",
            "epoch": -1,
            "best_fitness": None,
            "model": fake,
            "ema": None,
            "updates": None,
            "optimizer": None,
            "train_args": {"task": "classify", "mode": "train", "model": "yolov8n-cls.yaml", "data": "imagenet",
                           "epochs": epochs, "batch": 256, "imgsz": imgsz, "device": None, "optimizer": "SGD",
                           "lr0": 0.01, "amp": True, "half": False, "dropout": 0.0, "save_dir": "runs/classify"},
            "train_metrics": {"metrics/accuracy_top1": 0.5, "metrics/accuracy_top5": 0.9, "val/loss": 1.5,
                              "fitness": 0.7},
            "train_results": {"epoch": list(range(1, 4)), "metrics/accuracy_top1": [0.3, 0.4, 0.5]},
            "git": {"root": None, "branch": None, "commit": None, "origin": None},
        }
        ckpt.update(extra or {})
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(ckpt, path)
