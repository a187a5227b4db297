"""Preprocessing, defined once. Predict, val and every exported format apply exactly this.

Eval pipeline: decode (JPEG in draft mode at the smallest size that still covers the target), apply the EXIF
orientation, convert to RGB,
resize the shorter side to ``resize``, centre-crop ``crop`` x ``crop``, scale to [0, 1], subtract ``mean``,
divide by ``std``, lay out as CHW float32. The parameters travel in every artefact's metadata (``preprocess``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from yolo_export.errors import ImageError

IMG_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


def default_preprocess(imgsz: int = 224) -> dict:
    return {
        "resize": int(imgsz),
        "crop": int(imgsz),
        "interpolation": "bilinear",
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "layout": "NCHW",
        "value_range": [0.0, 1.0],
        "color": "RGB",
    }


def with_imgsz(pp: dict | None, imgsz: int) -> dict:
    """The same preprocessing retargeted to another square input size."""
    base = dict(pp or default_preprocess(imgsz))
    if base.get("resize") and base.get("crop"):
        ratio = base["resize"] / base["crop"]
        base["resize"] = int(math.floor(imgsz * ratio + 1e-6))
    else:
        base["resize"] = int(imgsz)
    base["crop"] = int(imgsz)
    return base


def open_image(path: str | Path, draft_to: int | None = None) -> Image.Image:
    """Open and decode an image as RGB. ``draft_to``: let JPEG decode at a reduced scale covering that size."""
    try:
        im = Image.open(path)
        if draft_to and im.format == "JPEG":
            w, h = im.size
            s = draft_to / min(w, h)
            if s < 1:
                im.draft("RGB", (math.ceil(w * s), math.ceil(h * s)))
        im.load()
        if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation: show the image the way a viewer (or browser) does
            im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"cannot read image {path}: {why}") from None
    return im


def to_pil(img) -> Image.Image:
    """Accept a PIL image, an HWC uint8/float numpy array (RGB), or a CHW/HWC torch tensor."""
    if isinstance(img, Image.Image):
        return img.convert("RGB") if img.mode != "RGB" else img
    arr = np.asarray(img.detach().cpu().numpy() if hasattr(img, "detach") else img)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    if arr.ndim != 3:
        raise ImageError(f"an image array must be HxW or HxWxC (got shape {arr.shape})")
    if arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, -1)
    if arr.dtype != np.uint8:
        scale = 255.0 if arr.max() <= 1.0 + 1e-6 else 1.0
        arr = np.clip(arr.astype(np.float32) * scale + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(arr[..., :3]), "RGB")


def resize_crop(im: Image.Image, pp: dict) -> Image.Image:
    """Resize the shorter side to ``resize`` and centre-crop ``crop``: one resampling pass over only the source
    region that lands in the crop (PIL's ``box``), which is what resize-then-crop computes, for less work."""
    resize, crop = int(pp["resize"]), int(pp["crop"])
    w, h = im.size
    s = resize / min(w, h)
    sw, sh = (resize, max(resize, round(h * s))) if w <= h else (max(resize, round(w * s)), resize)
    left, top = int(round((sw - crop) / 2.0)), int(round((sh - crop) / 2.0))
    if (w, h) == (sw, sh):
        return im if (w, h) == (crop, crop) else im.crop((left, top, left + crop, top + crop))
    sx, sy = w / sw, h / sh
    box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
    resample = _RESAMPLE.get(pp.get("interpolation", "bilinear"), Image.Resampling.BILINEAR)
    return im.resize((crop, crop), resample, box=box)


def to_array(im: Image.Image, pp: dict) -> np.ndarray:
    """HWC uint8 RGB image -> CHW float32 normalised array."""
    x = np.asarray(im, dtype=np.float32) * (1.0 / 255.0)
    mean, std = pp.get("mean", [0, 0, 0]), pp.get("std", [1, 1, 1])
    if any(mean) or any(s != 1 for s in std):
        x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(img, pp: dict) -> np.ndarray:
    """Any supported image (path, PIL, array, tensor) -> CHW float32, per ``pp``."""
    im = open_image(img, draft_to=pp["resize"]) if isinstance(img, (str, Path)) else to_pil(img)
    return to_array(resize_crop(im, pp), pp)
