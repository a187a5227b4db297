"""Preprocessing, defined once. Predict, val, the parity check and every exported format apply exactly this.

Eval pipeline, the reference's pixel for pixel: full decode (no JPEG draft mode), EXIF orientation, conversion to
8-bit RGB as the reference converts (:func:`to_rgb`), resize the shorter side to ``resize`` with the long side
``int(resize * long / short)`` (Pillow's antialiased bilinear, as the reference's resize does on PIL images), centre
crop ``crop`` x ``crop`` at the rounded offset, scale to [0, 1], subtract ``mean``, divide by ``std``, CHW float32.
The parameters travel in every artefact's metadata (``preprocess``).

``preprocess["fast"] = True`` is an explicit opt-in to a faster approximation (JPEG decoded in draft mode at a
reduced DCT scale, one resampling pass over only the source region that lands in the crop): a few /255 apart from
the reference on photos. Predict results and val metrics say which one ran (``preprocess: exact | fast``).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from yolo_export.errors import ImageError
from yolo_export.utils import LOGGER

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


MAX_PIXELS_ENV = "YOLO_EXPORT_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 200_000_000  # admits 100-megapixel photos with room; a 20000 x 20000 bomb is refused
# Our budget replaces Pillow's warning (which fires from 89 megapixels, below the budget). A process-wide filter set
# once, because warnings.catch_warnings is not safe in predict's decode threads.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def max_image_pixels() -> int:
    """The image-pixel budget: ``$YOLO_EXPORT_MAX_IMAGE_PIXELS`` or 200 megapixels."""
    v = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not v:
        return DEFAULT_MAX_PIXELS
    try:
        n = int(float(v))
    except ValueError:
        raise ImageError(f"{MAX_PIXELS_ENV}={v!r} is not a number of pixels") from None
    if n <= 0:
        raise ImageError(f"{MAX_PIXELS_ENV}={v!r} must be a positive number of pixels")
    return n


def check_pixels(size: tuple[int, int], path) -> None:
    """Refuse an image whose header claims more pixels than the budget, before anything is decoded."""
    w, h = int(size[0]), int(size[1])
    limit = max_image_pixels()
    if w <= 0 or h <= 0:
        raise ImageError(f"cannot read image {path}: it claims a size of {w}x{h}")
    if w * h > limit:
        raise ImageError(f"image {path} is {w}x{h} ({w * h / 1e6:.0f} megapixels), over the "
                         f"{limit / 1e6:.0f}-megapixel budget; set {MAX_PIXELS_ENV} to allow larger images")


def _open_checked(path) -> Image.Image:
    """``Image.open`` (header only) with the pixel budget applied to the size the header claims."""
    limit = max_image_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and limit > 2 * Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit // 2 + 1  # our budget, not Pillow's default, decides (and names its override)
    try:
        im = Image.open(path)
    except Image.DecompressionBombError:  # over Pillow's own limit, which is at or above ours: our words
        raise ImageError(f"image {path} is over the {limit / 1e6:.0f}-megapixel budget; set {MAX_PIXELS_ENV} "
                         f"to allow larger images") from None
    check_pixels(im.size, path)
    return im


def open_image(path: str | Path, draft_to: int | None = None) -> Image.Image:
    """Open and fully decode an image as 8-bit RGB, converted as the reference converts it.

    ``draft_to``: the fast opt-in only: let a JPEG decode at a reduced DCT scale that still covers that size.
    """
    try:
        im = _open_checked(path)
        if draft_to and im.format == "JPEG":
            w, h = im.size
            s = draft_to / min(w, h)
            if s < 1:
                im.draft("RGB", (math.ceil(w * s), math.ceil(h * s)))
        im.load()
        if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation: upright, as the reference's decoder shows it
            im = ImageOps.exif_transpose(im)
        im = to_rgb(im, path)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            MemoryError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"cannot read image {path}: {why}") from None
    return im


def _warn_lossy(path, what: str) -> None:
    LOGGER.warning(f"warning: {path}: {what}")


def to_rgb(im: Image.Image, path="image") -> Image.Image:
    """8-bit RGB the way the reference's decoder (OpenCV ``IMREAD_COLOR``) makes it: 16-bit samples keep their high
    byte (scaled, not clipped), alpha is dropped (no compositing), palettes expand, Adobe CMYK JPEGs use its formula.
    Modes it cannot read (32-bit integer / float TIFF) are scaled into 0-255. A warning names what is lost."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _wide_to_rgb(im, path)
    if mode == "CMYK" and im.format == "JPEG" and "adobe" in im.info:
        a = np.asarray(im, dtype=np.int32)
        kr = 255 - a[..., 3:4]
        return Image.fromarray((kr - ((a[..., :3] * kr) >> 8)).astype(np.uint8), "RGB")
    if "A" in mode or (mode in ("P", "L", "RGB") and "transparency" in im.info):
        alpha = im.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            _warn_lossy(path, "transparency dropped (transparent pixels keep their colour, as the reference reads "
                              "them)")
    return im.convert("RGB")


def _wide_to_rgb(im: Image.Image, path) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale -> 8-bit RGB (16-bit: the high byte, as the reference)."""
    a = np.asarray(im)
    if im.mode.startswith("I;16"):
        out = (a.astype(np.uint16) >> 8).astype(np.uint8)
        what = "16-bit samples scaled to 8 bits (high byte, as the reference does)"
    elif im.mode == "I":
        a = a.astype(np.int64)
        hi = int(a.max()) if a.size else 0
        if int(a.min()) >= 0 and hi <= 255:
            out, what = a.astype(np.uint8), ""
        else:
            shift = max(0, max(hi, 255).bit_length() - 8)
            out = (np.clip(a, 0, None) >> shift).astype(np.uint8)
            what = f"32-bit integer samples (max {hi}) scaled to 8 bits" + (", negatives clipped to 0"
                                                                           if int(a.min()) < 0 else "")
    else:
        f = np.nan_to_num(a.astype(np.float64))
        lo, hi = (float(f.min()), float(f.max())) if f.size else (0.0, 0.0)
        if lo >= 0 and hi <= 1:
            out, what = np.floor(f * 255 + 0.5).astype(np.uint8), "float samples in [0, 1] scaled to 8 bits"
        elif lo >= 0 and hi <= 255:
            out, what = np.floor(f + 0.5).astype(np.uint8), "float samples in [0, 255] rounded to 8 bits"
        else:
            out = np.floor((f - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8)
            what = f"float samples in [{lo:g}, {hi:g}] stretched to 8 bits"
    if what:
        _warn_lossy(path, what)
    return Image.fromarray(np.ascontiguousarray(out), "L").convert("RGB")


def to_pil(img) -> Image.Image:
    """Accept a PIL image, an HWC numpy array (RGB; uint8, uint16 = high byte as the reference, or float in [0, 1]
    or [0, 255]), or a CHW/HWC torch tensor."""
    if isinstance(img, Image.Image):
        return to_rgb(img)
    arr = np.asarray(img.detach().cpu().numpy() if hasattr(img, "detach") else img)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    if arr.ndim != 3:
        raise ImageError(f"an image array must be HxW or HxWxC (got shape {arr.shape})")
    if arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, -1)
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        scale = 255.0 if arr.max() <= 1.0 + 1e-6 else 1.0
        arr = np.clip(arr.astype(np.float32) * scale + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(arr[..., :3]), "RGB")


def resized_size(w: int, h: int, size: int) -> tuple[int, int]:
    """The reference's shorter-side resize: short -> ``size``, long -> ``int(size * long / short)``."""
    if w <= h:
        return size, int(size * h / w)
    return int(size * w / h), size


def resize_crop(im: Image.Image, pp: dict) -> Image.Image:
    """Resize the shorter side to ``resize``, then centre-crop ``crop`` at the rounded offset (exact), or, with
    ``pp["fast"]``, one resampling pass over the crop's source region (the faster approximation)."""
    resize, crop = int(pp["resize"]), int(pp["crop"])
    resample = _RESAMPLE.get(pp.get("interpolation", "bilinear"), Image.Resampling.BILINEAR)
    if pp.get("fast") and resize >= crop:  # (a crop larger than the resized image pads: the exact path does that)
        return _fast_resize_crop(im, resize, crop, resample)
    w, h = im.size
    nw, nh = resized_size(w, h, resize)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), resample)
    if nw < crop or nh < crop:  # pad with black first, as the reference's centre crop does
        canvas = Image.new(im.mode, (max(nw, crop), max(nh, crop)))
        canvas.paste(im, ((crop - nw) // 2 if crop > nw else 0, (crop - nh) // 2 if crop > nh else 0))
        im, (nw, nh) = canvas, canvas.size
    if (nw, nh) == (crop, crop):
        return im
    left, top = int(round((nw - crop) / 2.0)), int(round((nh - crop) / 2.0))
    return im.crop((left, top, left + crop, top + crop))


def _fast_resize_crop(im: Image.Image, resize: int, crop: int, resample) -> Image.Image:
    w, h = im.size
    s = resize / min(w, h)
    sw, sh = (resize, max(resize, round(h * s))) if w <= h else (max(resize, round(w * s)), resize)
    left, top = int(round((sw - crop) / 2.0)), int(round((sh - crop) / 2.0))
    if (w, h) == (sw, sh):
        return im if (w, h) == (crop, crop) else im.crop((left, top, left + crop, top + crop))
    sx, sy = w / sw, h / sh
    box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
    return im.resize((crop, crop), resample, box=box)


def to_array(im: Image.Image, pp: dict) -> np.ndarray:
    """HWC uint8 RGB image -> CHW float32 normalised array."""
    x = np.asarray(im, dtype=np.float32) / np.float32(255.0)  # a division, as the reference: bit-identical
    mean, std = pp.get("mean", [0, 0, 0]), pp.get("std", [1, 1, 1])
    if any(mean) or any(s != 1 for s in std):
        x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(img, pp: dict) -> np.ndarray:
    """Any supported image (path, PIL, array, tensor) -> CHW float32, per ``pp``."""
    if isinstance(img, (str, Path)):
        im = open_image(img, draft_to=pp["resize"] if pp.get("fast") else None)
    else:
        im = to_pil(img)
    return to_array(resize_crop(im, pp), pp)
