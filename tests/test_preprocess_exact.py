"""Preprocessing is the reference's, pixel for pixel: full decode, the shorter side to ``resize`` with the long side
``int(resize * long / short)``, Pillow's antialiased bilinear over the whole image, centre crop at the rounded offset,
/255 as a division. The faster approximation is an explicit opt-in that results and metrics record.
(The cross-check against the reference package itself is in ``tests/test_reference.py``.)"""

import numpy as np
import pytest
from PIL import Image

from yolo_export.data.transforms import default_preprocess, preprocess, resize_crop, resized_size, to_array


def _photo(w, h, seed=0):
    rng = np.random.default_rng(seed)
    lo = Image.fromarray(rng.integers(0, 256, (max(2, h // 30), max(2, w // 30), 3), dtype=np.uint8))
    a = np.asarray(lo.resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    return np.clip(a + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("w,h,size,expect", [
    (640, 480, 224, (298, 224)),    # int(224 * 640 / 480) = int(298.67): truncated, not rounded
    (480, 640, 224, (224, 298)),
    (1920, 1080, 224, (398, 224)),
    (333, 500, 224, (224, 336)),
    (500, 333, 224, (336, 224)),
    (224, 224, 224, (224, 224)),
    (97, 130, 224, (224, 300)),     # upscaling follows the same rule
    (33, 57, 32, (32, 55)),
])
def test_shorter_side_rule(w, h, size, expect):
    assert resized_size(w, h, size) == expect


@pytest.mark.parametrize("h,top", [(300, 38), (301, 38), (303, 40), (225, 0), (226, 1)])
def test_centre_crop_at_the_rounded_offset(h, top):
    """No resize needed (short side already 224): the crop is a plain window at round((h - 224) / 2), halves to
    even as Python's round (and the reference's centre crop) does."""
    a = _photo(224, h)
    out = np.asarray(resize_crop(Image.fromarray(a), default_preprocess(224)))
    assert np.array_equal(out, a[top:top + 224])


def test_resize_then_crop_is_the_reference_order():
    """The whole image is resized to (224, 298) first, then cropped at offset 37: not one pass over the crop box,
    and not a long side rounded to 299."""
    im = Image.fromarray(_photo(480, 640, 1))
    out = np.asarray(resize_crop(im, default_preprocess(224)))
    full = np.asarray(im.resize((224, 298), Image.Resampling.BILINEAR))
    assert np.array_equal(out, full[37:37 + 224])
    rounded = np.asarray(im.resize((224, 299), Image.Resampling.BILINEAR))[37:37 + 224]
    assert not np.array_equal(out, rounded)
    fast = np.asarray(resize_crop(im, dict(default_preprocess(224), fast=True)))
    assert fast.shape == out.shape and not np.array_equal(fast, out)


def test_crop_larger_than_resize_pads_with_black():
    a = _photo(40, 30, 2)
    out = np.asarray(resize_crop(Image.fromarray(a), {"resize": 20, "crop": 25, "interpolation": "bilinear"}))
    small = np.asarray(Image.fromarray(a).resize((26, 20), Image.Resampling.BILINEAR))
    assert out.shape == (25, 25, 3)
    assert np.array_equal(out[2:22, 0:25], small[:, 0:25]) and not out[:2].any() and not out[22:].any()


def test_jpeg_is_fully_decoded(tmp_path):
    """A path gives exactly what the fully decoded image gives (no draft mode); the fast opt-in drafts."""
    p = tmp_path / "photo.jpg"
    Image.fromarray(_photo(1280, 960, 3)).save(p, quality=90)
    pp = default_preprocess(224)
    full = Image.open(p)
    full.load()
    assert np.array_equal(preprocess(p, pp), to_array(resize_crop(full.convert("RGB"), pp), pp))
    fast = preprocess(p, dict(pp, fast=True))
    draft = Image.open(p)
    draft.draft("RGB", (299, 224))
    assert draft.size != (1280, 960)
    assert np.array_equal(fast, to_array(resize_crop(draft.convert("RGB"), dict(pp, fast=True)), pp))
    assert np.abs(fast - preprocess(p, pp)).max() > 1 / 255


def test_scaling_is_a_float32_division():
    row = np.arange(256, dtype=np.uint8).reshape(16, 16)
    x = to_array(Image.fromarray(np.stack([row] * 3, -1)), default_preprocess(16))
    assert np.array_equal(x[0], row.astype(np.float32) / np.float32(255))


def test_fast_is_an_opt_in_recorded_in_results_and_metrics(tiny_yolo, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i, (w, h) in enumerate([(640, 480), (333, 500)]):
        Image.fromarray(_photo(w, h, i)).save(d / f"{i}.jpg", quality=90)
    exact = tiny_yolo(d)
    fast = tiny_yolo.predict(d, fast_preprocess=True)
    assert [r.preprocess for r in exact] == ["exact", "exact"] and [r.preprocess for r in fast] == ["fast", "fast"]
    assert exact[0].to_dict()["preprocess"] == "exact" and fast[0].to_dict()["preprocess"] == "fast"
    ds = tmp_path / "ds"
    for split in ("train", "val"):
        for c in ("c0", "c1"):
            (ds / split / c).mkdir(parents=True)
            Image.fromarray(_photo(64, 48, len(c))).save(ds / split / c / "a.jpg")
    from yolo_export import YOLO

    y = YOLO("yolov8n-cls.yaml", names=["c0", "c1"])
    y.model.imgsz = 32
    assert y.val(data=str(ds), progress=False)["preprocess"] == "exact"
    assert y.val(data=str(ds), progress=False, fast_preprocess=True)["preprocess"] == "fast"
