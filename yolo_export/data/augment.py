"""Train-time transforms (random resized crop, horizontal flip, HSV jitter, random erasing), and the eval
transform, which is nothing but :func:`yolo_export.data.transforms.preprocess` (the predict path, defined once).

Every random draw comes from the ``rng`` passed in (a ``numpy.random.Generator`` that the dataset seeds with
``(seed, epoch, index)``), so augmentation does not depend on worker processes or ranks.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from yolo_export.data.transforms import _RESAMPLE, preprocess, to_array

# Defaults suit photos. The crop keeps at least half the image area, as the reference's classification training does
# (its ``scale=0.5`` -> RandomResizedCrop(scale=(0.5, 1))): ImageNet's (0.08, 1) is far harsher on small inputs and
# learned 3x slower per epoch on digits-32 (val top-1 after 2 of 5 epochs 0.23 vs 0.61; benchmarks/train_digits.py
# --vs-reference). ``DIGITS`` is the preset used for the built-in digits dataset (greyscale, orientation matters: no
# flip, no colour jitter; milder crops).
PHOTO = {"scale": (0.5, 1.0), "ratio": (3 / 4, 4 / 3), "fliplr": 0.5, "hsv_h": 0.015, "hsv_s": 0.4, "hsv_v": 0.4,
         "erasing": 0.4}
DIGITS = {"scale": (0.6, 1.0), "ratio": (3 / 4, 4 / 3), "fliplr": 0.0, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.3,
          "erasing": 0.0}
AUG_KEYS = tuple(PHOTO)


def aug_preset(data) -> dict:
    return dict(DIGITS if str(data).lower() == "digits" else PHOTO)


class EvalTransform:
    """The predict path's preprocessing, applied to a file path (so JPEG draft decoding matches too)."""

    takes_path = True

    def __init__(self, pp: dict):
        self.pp = pp

    def __call__(self, path, rng=None):
        return preprocess(path, self.pp)


class TrainTransform:
    """RandomResizedCrop -> optional horizontal flip -> HSV jitter -> normalise like ``pp`` -> random erasing."""

    takes_path = False

    def __init__(self, pp: dict, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), fliplr: float = 0.5, hsv_h: float = 0.015,
                 hsv_s: float = 0.4, hsv_v: float = 0.4, erasing: float = 0.4):
        self.pp = pp
        self.size = int(pp["crop"])
        self.scale = (float(scale[0]), float(scale[1])) if isinstance(scale, (list, tuple)) else (float(scale), 1.0)
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must be 0 < min <= max <= 1 (got {scale})")
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.fliplr, self.erasing = float(fliplr), float(erasing)
        self.hsv = (float(hsv_h), float(hsv_s), float(hsv_v))
        self.resample = _RESAMPLE.get(pp.get("interpolation", "bilinear"), Image.Resampling.BILINEAR)

    def crop_box(self, w: int, h: int, rng: np.random.Generator) -> tuple[float, float, float, float]:
        """A random box covering ``scale`` of the area with aspect ``ratio`` (float coordinates)."""
        area = w * h
        lr = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            a = area * rng.uniform(*self.scale)
            r = math.exp(rng.uniform(*lr))
            cw, ch = math.sqrt(a * r), math.sqrt(a / r)
            if cw <= w and ch <= h:
                x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
                return x0, y0, x0 + cw, y0 + ch
        s = min(w, h)  # fallback: the centre square
        return (w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2

    def __call__(self, im: Image.Image, rng: np.random.Generator) -> np.ndarray:
        box = self.crop_box(*im.size, rng)
        im = im.resize((self.size, self.size), self.resample, box=box)
        if self.fliplr and rng.random() < self.fliplr:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if any(self.hsv):
            im = hsv_jitter(im, *self.hsv, rng=rng)
        x = to_array(im, self.pp)
        if self.erasing and rng.random() < self.erasing:
            x = random_erase(x, rng)
        return x


def hsv_jitter(im: Image.Image, h: float, s: float, v: float, rng: np.random.Generator) -> Image.Image:
    """Shift hue by up to ``h`` of a turn, scale saturation and value by up to ``s``/``v`` (each side)."""
    hsv = np.asarray(im.convert("HSV"), dtype=np.float32)
    gains = rng.uniform(-1, 1, 3) * np.array([h, s, v], np.float32)
    hsv[..., 0] = (hsv[..., 0] + gains[0] * 255.0) % 256.0
    hsv[..., 1] *= 1.0 + gains[1]
    hsv[..., 2] *= 1.0 + gains[2]
    out = np.clip(hsv + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(out, "HSV").convert("RGB")


def random_erase(x: np.ndarray, rng: np.random.Generator, area=(0.02, 0.33), ratio=(0.3, 3.3)) -> np.ndarray:
    """Fill one random rectangle of a CHW array with noise (in the normalised value range)."""
    c, h, w = x.shape
    for _ in range(10):
        a = h * w * rng.uniform(*area)
        r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        eh, ew = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
        if 0 < eh < h and 0 < ew < w:
            y0, x0 = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            x = x.copy()
            x[:, y0:y0 + eh, x0:x0 + ew] = rng.standard_normal((c, eh, ew)).astype(np.float32) * float(x.std() or 1)
            return x
    return x
