"""Build a YOLOv8 classifier from its YAML description."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import torch
import yaml
from torch import nn

from yolo_export.errors import ArgumentError, FileError, YoloExportError
from yolo_export.limits import CLASSES, Budget
from yolo_export.nn.modules import MODULES, C2f, Classify, Conv

CFG_DIR = Path(__file__).resolve().parent.parent / "cfg"

# Module attributes that change the computation but are not in the weights. A model records them in
# ``model.yaml[ATTRS_KEY]`` (so checkpoints carry them); a YAML without them gets the reference classification
# model's values; checkpoints written before they were recorded (format version 1) get LEGACY_ATTRS.
ATTRS_KEY = "module_attrs"
DEFAULT_ATTRS = {"bn_eps": 1e-5, "bn_momentum": 0.1, "act": "SiLU", "dropout": 0.0}
LEGACY_ATTRS = {"bn_eps": 1e-3, "bn_momentum": 0.03, "act": "SiLU", "dropout": 0.0}
ACTIVATIONS = ("SiLU",)


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
            raise FileError(f"model YAML not found: {cfg} (bundled: yolov8{{n,s,m,l,x}}-cls.yaml)")
        with open(p) as f:
            d = yaml.safe_load(f)
        d.setdefault("yaml_file", name)
    scales = d.get("scales")
    if scales:
        scale = scale or d.get("scale") or next(iter(scales))
        if scale not in scales:
            raise ArgumentError(f"unknown scale {scale!r}; choose one of {', '.join(scales)}")
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
        attrs = check_attrs({**DEFAULT_ATTRS, **(self.yaml.get(ATTRS_KEY) or {})})
        check_arch(self.yaml, ch)
        if dropout:
            attrs["dropout"] = float(dropout)
        try:
            self.model, self.save = parse_model(self.yaml, ch)
        except (TypeError, ValueError, IndexError, KeyError, RuntimeError) as e:
            raise YoloExportError(f"model YAML cannot be built: {str(e).strip().splitlines()[0][:200]}") from None
        self.set_attrs(**attrs)
        self.stride = torch.tensor([1.0], device="cpu")  # a constant, real even in a meta-device build
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

    def set_attrs(self, **attrs) -> None:
        """Set computation attributes (BatchNorm eps/momentum, dropout p) on every module and record them."""
        cur = check_attrs({**DEFAULT_ATTRS, **(self.yaml.get(ATTRS_KEY) or {}), **attrs})
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = cur["bn_eps"], cur["bn_momentum"]
            elif isinstance(m, Classify):
                m.drop.p = cur["dropout"]
        self.yaml[ATTRS_KEY] = cur

    @property
    def attrs(self) -> dict:
        """The attributes the modules hold now (what a checkpoint records); refused if the layers disagree."""
        cur = dict(self.yaml.get(ATTRS_KEY) or DEFAULT_ATTRS)
        bns = {(m.eps, m.momentum) for m in self.modules() if isinstance(m, nn.BatchNorm2d)}
        if len(bns) > 1:
            raise YoloExportError(f"the BatchNorm layers differ in eps/momentum ({sorted(bns, key=str)[:3]}); "
                                  "a checkpoint records one value for all of them")
        if bns:
            cur["bn_eps"], cur["bn_momentum"] = bns.pop()
        cur["dropout"] = float(self.model[-1].drop.p)
        return check_attrs(cur)

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


# Architecture budgets (yolo_export.limits.Budget: default, override variable, one-line error). The number of
# classes shares limits.CLASSES (YOLO_EXPORT_MAX_NC) with metadata readers. yolov8x-cls: 57.4 M parameters at
# nc=1000, width 1.25, depth 1.0, at most 1280 channels, 6 repeats.
PARAMS = Budget("YOLO_EXPORT_MAX_PARAMS", 300_000_000, "parameters")
WIDTH = Budget("YOLO_EXPORT_MAX_WIDTH", 4, "times")
DEPTH = Budget("YOLO_EXPORT_MAX_DEPTH", 4, "times")
CHANNELS = Budget("YOLO_EXPORT_MAX_CHANNELS", 16384, "channels")
REPEATS = Budget("YOLO_EXPORT_MAX_REPEATS", 64, "repeats")
MAX_ROWS = 256


def _limit(value, budget: Budget | None, field: str, limit: int = 0) -> None:
    """A positive number within ``budget`` (or within ``limit`` for a fixed bound)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise YoloExportError(f"model {field} {value!r} is not a positive number")
    if budget is not None:
        budget.check(value, f"model {field}")
    elif value > limit:
        raise YoloExportError(f"model {field} {value!r} is over the limit of {limit}")


def check_arch(d: dict, ch) -> None:
    """Budgets on a model description, checked before anything is built: nc, input channels, rows and repeats,
    width/depth multiples, channel counts, then the parameter count of a build on the meta device (no memory)."""
    _limit(d.get("nc"), CLASSES, "nc")
    _limit(ch, None, "input channels", 16)
    rows = d.get("backbone"), d.get("head")
    if not all(isinstance(r, list) for r in rows) or not 0 < len(rows[0]) + len(rows[1]) <= MAX_ROWS:
        raise YoloExportError(f"model YAML needs 'backbone' and 'head' lists of at most {MAX_ROWS} rows in all")
    for i, row in enumerate(rows[0] + rows[1]):
        if not (isinstance(row, list) and len(row) == 4 and isinstance(row[0], int) and isinstance(row[2], str)
                and isinstance(row[3], list) and len(row[3]) <= 16):
            raise YoloExportError(f"model YAML row {i} is not [from, repeats, module, args]: {str(row)[:80]}")
        _limit(row[1], REPEATS, f"row {i} repeats")
        if row[0] != -1 and not 0 <= row[0] < i:
            raise YoloExportError(f"model YAML row {i} takes its input from {row[0]}, not an earlier row")
        if row[2] in ("Conv", "C2f"):
            _limit(row[3][0] if row[3] else None, CHANNELS, f"row {i} channels")
    if d.get("scales"):
        s = d["scales"].get(d.get("scale")) if isinstance(d["scales"], dict) else None
        if not (isinstance(s, list) and len(s) == 3):
            raise YoloExportError(f"model scale {d.get('scale')!r} is not [depth, width, max_channels]")
        _limit(s[0], DEPTH, "depth multiple")
        _limit(s[1], WIDTH, "width multiple")
        _limit(s[2], CHANNELS, "max_channels")
    if torch.empty(0).device.type != "meta":
        with torch.device("meta"):
            n = sum(p.numel() for p in parse_model(d, ch)[0].parameters())
        PARAMS.check(n, "model size")


def check_attrs(attrs: dict) -> dict:
    """Validate module attributes; a value this builder cannot reproduce is refused with one line naming it."""
    out = dict(attrs)
    unknown = sorted(set(out) - set(DEFAULT_ATTRS))
    if unknown:
        raise YoloExportError(f"unknown module attribute(s) {', '.join(unknown)} (known: {', '.join(DEFAULT_ATTRS)})")
    eps, mom, p = out["bn_eps"], out["bn_momentum"], out["dropout"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise YoloExportError(f"BatchNorm eps {eps!r} is not a number in (0, 1)")
    if mom is not None and (isinstance(mom, bool) or not isinstance(mom, (int, float)) or not 0 <= mom <= 1):
        raise YoloExportError(f"BatchNorm momentum {mom!r} is not a number in [0, 1] (or None)")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise YoloExportError(f"dropout p {p!r} is not a number in [0, 1)")
    if out["act"] not in ACTIVATIONS:
        raise YoloExportError(f"activation {out['act']!r} is not supported "
                              f"(this model builds {', '.join(ACTIVATIONS)})")
    out.update(bn_eps=float(eps), bn_momentum=None if mom is None else float(mom), dropout=float(p))
    return out


def normalise_names(names, nc: int) -> dict[int, str]:
    if names is None:
        return {i: f"class{i}" for i in range(nc)}
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    out = {int(k): str(v) for k, v in names.items()}
    if len(out) != nc:
        raise ArgumentError(f"{len(out)} class names given for a model with nc={nc}")
    return out


def parse_model(d: dict, ch: int):
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
