"""Training plots: loss/accuracy curves (``results.png``) and the confusion matrix. matplotlib (Agg) imported lazily;
files are written to a temporary name and renamed into place."""

from __future__ import annotations

import os
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    return path


def plot_results(history: list[dict], path) -> Path | None:
    """Train/val loss, top-1/top-5 and learning rate per epoch."""
    if not history:
        return None
    plt = _plt()
    ep = [r["epoch"] for r in history]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6), tight_layout=True)
    ax[0].plot(ep, [r["train/loss"] for r in history], "o-", label="train")
    if any(r.get("val/loss") is not None for r in history):
        ax[0].plot(ep, [r.get("val/loss") for r in history], "s-", label="val")
    ax[0].set_title("loss")
    ax[1].plot(ep, [r.get("metrics/top1") for r in history], "o-", label="top-1")
    ax[1].plot(ep, [r.get("metrics/top5") for r in history], "s-", label="top-5")
    ax[1].set_title("val accuracy")
    ax[2].plot(ep, [r.get("lr") for r in history], "o-")
    ax[2].set_title("learning rate")
    for a in ax:
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    ax[0].legend()
    ax[1].legend()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_confusion_matrix(cm, names: list[str], path, normalize: bool = True) -> Path:
    """Rows: true class; columns: predicted class. Normalised per row (recall) unless ``normalize=False``."""
    import numpy as np

    plt = _plt()
    cm = np.asarray(cm, dtype=np.float64)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    n = len(names)
    size = min(max(4.0, 0.45 * n + 2), 16)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), tight_layout=True)
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046)
    if n <= 30:
        ax.set_xticks(range(n), names, rotation=90 if n > 10 else 0)
        ax.set_yticks(range(n), names)
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, f"{shown[i, j]:.2f}" if normalize else int(cm[i, j]), ha="center", va="center",
                            fontsize=7, color="white" if shown[i, j] > 0.5 * shown.max() else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix" + (" (normalised per true class)" if normalize else ""))
    out = _save(fig, path)
    plt.close(fig)
    return out
