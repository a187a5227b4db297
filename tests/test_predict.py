"""The predict API: every source kind, Results, batching, streaming, bad images."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from yolo_export import YOLO
from yolo_export.data.transforms import default_preprocess, preprocess
from yolo_export.errors import ImageError, YoloExportError


def test_results_api(tiny_yolo, images):
    res = tiny_yolo(str(images / "img0.jpg"))
    assert len(res) == 1
    r = res[0]
    p = r.probs
    assert isinstance(p.top1, int) and len(p.top5) == 5 and p.top5[0] == p.top1
    assert p.top1conf == pytest.approx(float(p.data.max()))
    assert p.top5conf == sorted(p.top5conf, reverse=True)
    assert p.data.shape == (10,) and p.data.sum() == pytest.approx(1.0, abs=1e-5)
    assert r.names == {i: f"c{i}" for i in range(10)} and r.path.endswith("img0.jpg")
    assert set(r.speed) == {"preprocess", "inference", "postprocess"}
    d = json.loads(r.tojson())
    assert d["top1"] == p.top1 and d["name"] == f"c{p.top1}" and len(d["top5"]) == 5
    assert r.summary()[0]["class"] == p.top1


def test_every_source_kind_gives_same_answer(tiny_yolo, images):
    path = images / "img0.jpg"
    ref = tiny_yolo(str(path))[0].probs.data
    pil = Image.open(path).convert("RGB")
    pp = default_preprocess(32)
    # PIL decodes JPEGs in draft mode from a path; compare in-memory inputs against the same decoded image
    mem = tiny_yolo(pil)[0].probs.data
    for src in (np.asarray(pil), torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1), [pil]):
        assert np.allclose(tiny_yolo(src)[0].probs.data, mem, atol=1e-6)
    ready = torch.from_numpy(preprocess(path, pp))[None]  # a 4-D tensor is taken as a ready batch
    assert np.allclose(tiny_yolo(ready)[0].probs.data, ref, atol=1e-6)
    # directory, glob and list of paths
    d = tiny_yolo(images)
    g = tiny_yolo(str(images / "*.png"))
    lst = tiny_yolo([str(images / "img1.png"), str(images / "img3.png")])
    assert len(d) == 4 and len(g) == 2 and len(lst) == 2
    assert [r.probs.top1 for r in g] == [r.probs.top1 for r in lst]


def test_batch_and_stream_match_single(tiny_yolo, images):
    one = [r.probs.data for r in tiny_yolo(images, batch=1)]
    many = [r.probs.data for r in tiny_yolo(images, batch=3)]
    gen = tiny_yolo.predict(images, batch=2, stream=True)
    assert not isinstance(gen, list)
    streamed = [r.probs.data for r in gen]
    assert all(np.allclose(a, b, atol=1e-4) for a, b in zip(one, many))
    assert all(np.allclose(a, b, atol=1e-4) for a, b in zip(one, streamed))


def test_corrupt_image_is_one_clear_error_and_skipped_in_folder(tiny_yolo, images, tmp_path, caplog):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        tiny_yolo(str(bad))
    with pytest.raises(ImageError, match="not found"):
        tiny_yolo(str(tmp_path / "missing.jpg"))
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(bad.read_bytes())
    (folder / "notes.txt").write_text("not an image")
    Image.open(images / "img0.jpg").save(folder / "good.jpg")
    logger = logging.getLogger("yolo_export")
    logger.propagate = True
    try:
        with caplog.at_level(logging.WARNING, logger="yolo_export"):
            res = tiny_yolo(folder)
    finally:
        logger.propagate = False
    assert [r.path.split("/")[-1] for r in res] == ["good.jpg"]
    assert "broken.jpg" in caplog.text
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageError, match="no images"):
        tiny_yolo(empty)


def test_pt_imgsz_override_and_static_artefact_refuses(tiny_yolo, images, tmp_path):
    r64 = tiny_yolo(images, imgsz=64)
    assert len(r64) == 4
    path = tiny_yolo.export("torchscript", output=str(tmp_path / "m.torchscript"), verify=False)
    with pytest.raises(YoloExportError, match="imgsz 32"):
        YOLO(path)(images, imgsz=64)


def test_pt_roundtrip_predicts_identically(tiny_yolo, tiny_pt, images):
    a = [r.probs.data for r in tiny_yolo(images)]
    b = [r.probs.data for r in YOLO(tiny_pt)(images)]
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(a, b))


def test_preprocess_defined_once_matches_manual(images):
    pp = default_preprocess(32)
    x = preprocess(images / "img1.png", pp)  # PNG: no draft decode
    im = Image.open(images / "img1.png").convert("RGB")  # 40x80 -> 32x64 -> centre crop 32x32
    im = im.resize((32, 64), Image.Resampling.BILINEAR).crop((0, 16, 32, 48))
    ref = np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    # one resampling pass over the crop's source region equals resize-then-crop up to uint8 rounding
    assert np.abs(x - ref).max() <= 1 / 255 + 1e-6 and np.abs(x - ref).mean() < 0.5 / 255


def test_exif_orientation_is_applied(tmp_path):
    # a camera JPEG stored sideways with orientation 6 must be seen upright, as viewers and browsers show it
    yy, xx = np.mgrid[0:48, 0:80]
    arr = np.stack([xx * 3, yy * 5, (xx + yy) % 256], -1).astype(np.uint8)
    upright = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "side.png", exif=exif)
    upright.save(tmp_path / "up.png")
    pp = default_preprocess(32)
    a, b = preprocess(tmp_path / "side.png", pp), preprocess(tmp_path / "up.png", pp)
    assert np.abs(a - b).max() < 1e-6
