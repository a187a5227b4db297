"""Build a YOLOv8 classifier from its YAML description."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import torch
import yaml
from torch import nn

from yolo_export.errors import YoloExportError
from yolo_export.nn.modules import MODULES, C2f, Classify, Conv

CFG_DIR = Path(__file__).resolve().parent.parent / "cfg"


def make_divisible(x, divisor=8):
    return math.ceil(x / divisor) * divisor


def resolve_cfg(cfg: str | Path | dict, scale: str | None = None) -> dict:
    """Read a model YAML (a path, a bundled name like ``yolov8s-cls.yaml``, or a dict) and fix its scale."""
    if isinstance(cfg, dict):
        d = copy.deepcopy(cfg)
    else:
        p = Path(cfg)
        name = p.name
        m = re.match(r"^yolov8([nslmx])-cls\.ya?ml$", name)
        if m and scale is None:
            scale = m.group(1)
        if not p.exists():
            unified = re.sub(r"yolov8[nslmx]-cls", "yolov8-cls", name)
            p = CFG_DIR / unified
        if not p.exists():
            raise YoloExportError(f"model YAML not found: {cfg} (bundled: yolov8{{n,s,m,l,x}}-cls.yaml)")
        with open(p) as f:
            d = yaml.safe_load(f)
        d.setdefault("yaml_file", name)
    scales = d.get("scales")
    if scales:
        scale = scale or d.get("scale") or next(iter(scales))
        if scale not in scales:
            raise YoloExportError(f"unknown scale {scale!r}; choose one of {', '.join(scales)}")
        d["scale"] = scale
    return d


class ClassificationModel(nn.Module):
    """A YOLOv8 classifier: ``self.model`` is the layer list, so state-dict keys read ``model.{i}...``."""

    def __init__(self, cfg="yolov8n-cls.yaml", ch: int = 3, nc: int | None = None, scale: str | None = None,
                 names: dict | list | None = None, dropout: float = 0.0):
        super().__init__()
        self.yaml = resolve_cfg(cfg, scale)
        if nc is None and names is not None:
            nc = len(names)
        if nc is not None:
            self.yaml["nc"] = int(nc)
        self.yaml["channels"] = ch
        self.model, self.save = parse_model(self.yaml, ch, dropout=dropout)
        self.stride = torch.tensor([1.0])
        self.names = normalise_names(names, self.yaml["nc"])

    @property
    def nc(self) -> int:
        return self.yaml["nc"]

    @property
    def scale(self) -> str | None:
        return self.yaml.get("scale")

    def forward(self, x):
        for m in self.model:
            x = m(x)
        return x

    def fuse(self) -> ClassificationModel:
        for m in self.modules():
            if isinstance(m, Conv):
                m.fuse()
        return self

    def is_fused(self) -> bool:
        return not any(isinstance(m, nn.BatchNorm2d) for m in self.modules())

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def gflops(self, imgsz: int = 224) -> float:
        return count_flops(self, imgsz) / 1e9

    def reset_classes(self, names) -> None:
        """Replace the head's linear layer for a new class list (transfer learning)."""
        names = normalise_names(names, len(names))
        head: Classify = self.model[-1]
        if head.linear.out_features != len(names):
            head.linear = nn.Linear(head.linear.in_features, len(names))
        self.yaml["nc"] = len(names)
        self.names = names


def normalise_names(names, nc: int) -> dict[int, str]:
    if names is None:
        return {i: f"class{i}" for i in range(nc)}
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    out = {int(k): str(v) for k, v in names.items()}
    if len(out) != nc:
        raise YoloExportError(f"{len(out)} class names given for a model with nc={nc}")
    return out


def parse_model(d: dict, ch: int, dropout: float = 0.0):
    nc = d["nc"]
    depth, width, max_channels = 1.0, 1.0, float("inf")
    if d.get("scales"):
        depth, width, max_channels = d["scales"][d["scale"]]
    chs = [ch]
    layers, save = [], []
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        if m not in MODULES:
            raise YoloExportError(f"unknown module {m!r} in model YAML (known: {', '.join(MODULES)})")
        mod = MODULES[m]
        args = [nc if a == "nc" else a for a in args]
        n = max(round(n * depth), 1) if n > 1 else n
        c1 = chs[f]
        if mod in (Conv, C2f):
            c2 = make_divisible(min(args[0], max_channels) * width, 8)
            args = [c1, c2, *args[1:]]
            if mod is C2f:
                args.insert(2, n)
                n = 1
        elif mod is Classify:
            c2 = args[0]
            args = [c1, *args]
            if dropout:
                args += [1, 1, None, 1, dropout]
        else:
            c2 = c1
        layer = nn.Sequential(*(mod(*args) for _ in range(n))) if n > 1 else mod(*args)
        layer.i, layer.f = i, f
        layers.append(layer)
        if i == 0:
            chs = []
        chs.append(c2)
    return nn.Sequential(*layers), sorted(save)


def count_flops(model: nn.Module, imgsz: int = 224) -> float:
    """Multiply-accumulates x 2 of Conv2d and Linear layers for one image (the usual GFLOPs figure)."""
    total = 0.0

    def conv_hook(m, inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += 2.0 * out.numel() * k / out.shape[0]

    def lin_hook(m, inp, out):
        nonlocal total
        total += 2.0 * m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was_training = model.training
    p = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, imgsz, imgsz, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total
