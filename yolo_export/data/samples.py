"""Sample batches for parity checks and INT8 calibration: real images from a dataset split, else generated ones.

Used by the exporter (calibration, the parity check's inputs), the registry's ``ExportContext`` and the tests. It
depends only on ``data`` and ``errors``, so that the registry can use it without importing the parity check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolo_export.errors import VerificationError


def check_inputs(imgsz: int, n: int = 8, data: str | None = None, preprocess: dict | None = None,
                 seed: int = 0) -> np.ndarray:
    """float32 NCHW inputs for parity checks: real images from ``data`` where given, else smooth random images."""
    if data:
        try:
            return calibration_batch(data, imgsz, n, preprocess, split="val")
        except Exception:  # noqa: BLE001 - fall back to generated inputs
            pass
    rng = np.random.default_rng(seed)
    lo = rng.random((n, 3, max(imgsz // 8, 2), max(imgsz // 8, 2)), dtype=np.float32)
    x = np.repeat(np.repeat(lo, 8, axis=2), 8, axis=3)[:, :, :imgsz, :imgsz]
    if x.shape[-1] < imgsz:
        x = np.pad(x, ((0, 0), (0, 0), (0, imgsz - x.shape[2]), (0, imgsz - x.shape[3])), mode="edge")
    x = 0.7 * x + 0.3 * rng.random(x.shape, dtype=np.float32)
    pp = preprocess or {}
    mean, std = np.asarray(pp.get("mean", [0, 0, 0]), np.float32), np.asarray(pp.get("std", [1, 1, 1]), np.float32)
    x = (x - mean[:, None, None]) / std[:, None, None]
    return np.ascontiguousarray(x.astype(np.float32))


def calibration_batch(data, imgsz: int, n: int, preprocess: dict | None = None, split: str = "train",
                      fraction: float | None = None) -> np.ndarray:
    """Up to ``n`` preprocessed images from a dataset (``digits`` or an ImageFolder root), else generated."""
    from yolo_export.data.transforms import default_preprocess, with_imgsz
    from yolo_export.data.transforms import preprocess as prep

    pp = with_imgsz(preprocess, imgsz) if preprocess else default_preprocess(imgsz)
    if not data:
        return check_inputs(imgsz, n, None, pp, seed=1)
    from yolo_export.data.datasets import resolve_dataset

    root = resolve_dataset(data)
    files = list_split_images(root, split)
    if fraction:
        n = max(1, min(n, int(len(files) * float(fraction))))
    if not files:
        raise VerificationError(f"no images found in the '{split}' split of {data}")
    idx = np.random.default_rng(0).permutation(len(files))[:n]
    return np.stack([prep(files[i], pp) for i in sorted(idx)])


def list_split_images(root, split: str) -> list[Path]:
    """The image files of a dataset split (the train split falls back to val where a dataset has none)."""
    from yolo_export.data.datasets import scan_split

    if split == "train" and not (Path(root) / "train").is_dir():
        split = "val"
    samples, _ = scan_split(root, split)
    return [Path(p) for p, _ in samples]
