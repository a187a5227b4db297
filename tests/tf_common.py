"""Shared by the TensorFlow-family tests: a checkpoint of a tiny model whose class probabilities really differ
between inputs (see ``backend_models.condition``)."""

from __future__ import annotations

import copy
from pathlib import Path


def spread_checkpoint(tiny_yolo, path: Path, seed: int = 0) -> Path:
    """Save a copy of the tiny model, conditioned (BN statistics, centred head) so its outputs really differ."""
    from backend_models import condition
    from yolo_export.nn.checkpoint import save_checkpoint

    model = copy.deepcopy(tiny_yolo.model).float()
    condition(model, 32, seed=seed, logit_std=2.0)  # milder logits: fp16 rounding stays inside 1e-2
    model.imgsz = 32
    save_checkpoint(path, model, half=False)
    return path
