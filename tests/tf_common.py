"""Shared by the TensorFlow-family tests: a tiny model whose class probabilities really differ between inputs.

The conftest ``tiny_yolo`` at random init has pooled features of ~1e-8, so its probabilities are uniform to 1e-7
and top-1 agreement on it is a coin toss. Here the BatchNorm statistics are set from one batch of images (as a
short training run would) and the head is scaled, which gives confident, input-dependent predictions.
"""

from __future__ import annotations

import copy
from pathlib import Path


def spread_checkpoint(tiny_yolo, path: Path, seed: int = 0) -> Path:
    import torch

    from conftest import sharpen
    from yolo_export.nn.checkpoint import save_checkpoint

    model = copy.deepcopy(tiny_yolo.model).float()
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(32, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(lo, size=32, mode="bilinear", align_corners=False)
    x = (0.7 * x + 0.3 * torch.rand(32, 3, 32, 32, generator=g)).clamp(0, 1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    for m in bns:
        m.momentum = 0.03
    model.eval()
    sharpen(model, seed=seed, gain=2.0)
    model.imgsz = 32
    save_checkpoint(path, model, half=False)
    return path
