"""A tiny model whose outputs depend on its input, for the backend parity tests (OpenVINO, ncnn, Paddle, CoreML).

A freshly initialised yolov8n-cls shrinks its activations layer after layer (about 1e-7 at the head at imgsz 32),
so every input gets the same, near-uniform probabilities and a parity check cannot fail. Here the BatchNorm
statistics are set from a pass over generated images (so each layer sees unit-scale activations, as after
training), and the classifier is centred and scaled so that different inputs get different, confident classes.
"""

from __future__ import annotations

import numpy as np
import pytest

IMGSZ = 32
NAMES = [f"c{i}" for i in range(10)]


def condition(model, imgsz: int = IMGSZ, n: int = 64, seed: int = 0, logit_std: float = 4.0):
    import torch

    from yolo_export.verify import check_inputs

    x = torch.from_numpy(np.concatenate([check_inputs(imgsz, n // 2, seed=seed),
                                         check_inputs(imgsz, n - n // 2, seed=seed + 100)]))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model(x)
    for bn, mom in zip(bns, momenta):
        bn.momentum = mom
    model.eval()
    head = model.model[-1]
    with torch.no_grad():
        feats = head.pool(head.conv(_trunk(model, x))).flatten(1)
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(head.linear.weight.shape, generator=g)
        logits = (feats - feats.mean(0)) @ w.T
        w *= logit_std / float(logits.std())
        head.linear.weight.copy_(w)
        head.linear.bias.copy_(-(feats.mean(0) @ w.T))
    return model


def _trunk(model, x):
    for m in model.model[:-1]:
        x = m(x)
    return x


def conditioned_yolo(imgsz: int = IMGSZ):
    import torch

    from yolo_export import YOLO

    torch.manual_seed(0)
    y = YOLO("yolov8n-cls.yaml", names=NAMES)
    condition(y.model, imgsz)
    y.model.imgsz = imgsz
    return y


def save_conditioned(path, imgsz: int = IMGSZ):
    from yolo_export.nn.checkpoint import save_checkpoint

    save_checkpoint(path, conditioned_yolo(imgsz).model, half=False)
    return path


def torch_probs(pt, x: np.ndarray, fp16_weights: bool = False) -> np.ndarray:
    """Probabilities of the .pt model (fused, fp32 compute); ``fp16_weights``: weights rounded to fp16 first."""
    import torch

    from yolo_export import YOLO

    m = YOLO(pt).model.float().eval().fuse()
    with torch.no_grad():
        if fp16_weights:
            for p in m.parameters():
                p.copy_(p.half().float())
        return m(torch.from_numpy(x)).numpy()


def result_probs(results) -> np.ndarray:
    return np.stack([r.probs.data for r in results])


@pytest.fixture(scope="session")
def conditioned_master(tmp_path_factory):
    return save_conditioned(tmp_path_factory.mktemp("conditioned") / "cond.pt")


@pytest.fixture()
def cond_pt(conditioned_master, tmp_path):
    """A fresh copy of the conditioned checkpoint in this test's tmp dir (exports land beside it)."""
    import shutil

    dst = tmp_path / "cond.pt"
    shutil.copy(conditioned_master, dst)
    return dst
