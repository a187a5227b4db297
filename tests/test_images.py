"""Images from elsewhere: every mode converted as the reference converts it (with a warning where information is
lost), pixel budgets checked from the header before decoding, globs that cannot loop or leave their root, and a
folder where nothing could be read is an error."""

import json
import logging
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from yolo_export.data.transforms import (DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, check_pixels, default_preprocess,
                                         open_image, preprocess, to_pil)
from yolo_export.errors import ImageError


@pytest.fixture()
def warnings_seen(caplog):
    caplog.set_level(logging.WARNING, logger="yolo_export")
    return lambda: " ".join(r.getMessage() for r in caplog.records)


def _grad16(h=16, w=16):
    return (np.arange(h * w).reshape(h, w) * (65535 // (h * w - 1))).astype(np.uint16)


# ------------------------------------------------------------------------------------------ modes
@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16bit_keeps_the_high_byte_not_clipped(tmp_path, suffix, warnings_seen):
    a = _grad16()
    p = tmp_path / f"g16.{suffix}"
    Image.fromarray(a).save(p)
    out = np.asarray(open_image(p))
    assert np.array_equal(out[..., 0], (a >> 8).astype(np.uint8)) and np.array_equal(out[..., 0], out[..., 2])
    assert 120 < out.mean() < 135  # a 0..65535 gradient is mid-grey on average, not saturated white (clipping)
    assert "16-bit" in warnings_seen()


def test_16bit_rgb_png_is_read_at_8_bits(tmp_path):
    """Pillow reads 16-bit RGB PNGs as their high bytes already (as the reference's decoder does)."""
    a = np.random.default_rng(0).integers(0, 65536, (8, 8, 3)).astype(">u2")
    raw = b"".join(b"\0" + a[y].tobytes() for y in range(8))
    p = tmp_path / "rgb16.png"
    p.write_bytes(_png(8, 8, raw, bit_depth=16, color_type=2))
    assert np.array_equal(np.asarray(open_image(p)), (a.astype(np.uint16) >> 8).astype(np.uint8))


@pytest.mark.parametrize("values,expect,word", [
    (np.linspace(0, 1, 64, dtype=np.float32), np.floor(np.linspace(0, 1, 64) * 255 + 0.5), "[0, 1]"),
    (np.linspace(0, 200, 64, dtype=np.float32), np.floor(np.linspace(0, 200, 64, dtype=np.float32) + 0.5),
     "[0, 255]"),
    (np.linspace(-10, 990, 64, dtype=np.float32), np.floor(np.linspace(0, 255, 64) + 0.5), "stretched"),
])
def test_float_tiff_is_scaled(tmp_path, values, expect, word, warnings_seen):
    p = tmp_path / "f.tif"
    Image.fromarray(values.reshape(8, 8)).save(p)
    out = np.asarray(open_image(p))[..., 0].ravel().astype(int)
    assert np.abs(out - expect.astype(int)).max() <= 1
    assert word in warnings_seen()


def test_int32_tiff_is_scaled(tmp_path, warnings_seen):
    a = _grad16().astype(np.int32)
    p = tmp_path / "i32.tif"
    Image.fromarray(a).save(p)
    out = np.asarray(open_image(p))[..., 0]
    assert np.array_equal(out, (a >> 8).astype(np.uint8)) and "32-bit integer" in warnings_seen()


def test_rgba_drops_alpha_with_a_warning_only_when_transparent(tmp_path, warnings_seen):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    opaque = np.dstack([rgb, np.full((8, 8), 255, np.uint8)])
    Image.fromarray(opaque).save(tmp_path / "opaque.png")
    assert np.array_equal(np.asarray(open_image(tmp_path / "opaque.png")), rgb)
    assert "transparency" not in warnings_seen()
    clear = opaque.copy()
    clear[..., 3] = 0
    Image.fromarray(clear).save(tmp_path / "clear.png")
    assert np.array_equal(np.asarray(open_image(tmp_path / "clear.png")), rgb)  # colours kept, not composited
    assert "transparency dropped" in warnings_seen()


def test_palette_and_greyscale_expand(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    assert np.array_equal(np.asarray(open_image(tmp_path / "p.png")), np.asarray(pal.convert("RGB")))
    grey = Image.fromarray(rgb).convert("L")
    grey.save(tmp_path / "l.png")
    assert np.array_equal(np.asarray(open_image(tmp_path / "l.png")), np.stack([np.asarray(grey)] * 3, -1))


def test_cmyk_jpeg_uses_the_reference_formula(tmp_path):
    """Full cyan+magenta+yellow ink without black: the reference's decoder gives 1 (k - (255 - c) * k >> 8 on the
    inverted Adobe samples), Pillow's own conversion 0."""
    im = Image.new("CMYK", (16, 16), (255, 255, 255, 0))
    im.save(tmp_path / "cmyk.jpg", quality=100)
    out = np.asarray(open_image(tmp_path / "cmyk.jpg"))
    assert out.max() <= 1 and (out == 1).mean() > 0.9
    Image.new("CMYK", (16, 16), (0, 0, 0, 0)).save(tmp_path / "white.jpg", quality=100)
    assert np.asarray(open_image(tmp_path / "white.jpg")).min() >= 254


def test_uint16_array_input_keeps_the_high_byte():
    a = np.stack([_grad16()] * 3, -1)
    assert np.array_equal(np.asarray(to_pil(a)), (a >> 8).astype(np.uint8))


# ------------------------------------------------------------------------------------------ pixel budget
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(w: int, h: int, raw: bytes, bit_depth: int = 8, color_type: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


def bomb_png(path, side: int = 20000):
    """A real decompression bomb: a 1-bit 20000 x 20000 PNG of zeros (50 MB of scanlines in ~50 kB)."""
    c = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)
    body = b"".join(c.compress(row * 1000) for _ in range(side // 1000)) + c.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b""))
    return path


def huge_jpeg(path, side: int = 65000):
    """A small JPEG whose frame header claims side x side pixels."""
    import io

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(buf, "JPEG")
    b = bytearray(buf.getvalue())
    i = b.index(b"\xff\xc0")
    b[i + 5:i + 9] = struct.pack(">HH", side, side)
    path.write_bytes(bytes(b))
    return path


@pytest.mark.parametrize("make", [bomb_png, huge_jpeg])
def test_bomb_alone_is_one_clear_error_from_the_header(tmp_path, make):
    p = make(tmp_path / ("bomb.png" if make is bomb_png else "huge.jpg"))
    assert p.stat().st_size < 200_000
    with pytest.raises(ImageError) as e:
        preprocess(p, default_preprocess(32))
    msg = str(e.value)
    assert "megapixel budget" in msg and MAX_PIXELS_ENV in msg and str(p) in msg and "\n" not in msg


def test_bomb_in_a_folder_is_one_skipped_file(tiny_yolo, tmp_path, warnings_seen):
    d = tmp_path / "mixed"
    d.mkdir()
    Image.fromarray(np.full((40, 30, 3), 90, np.uint8)).save(d / "a.jpg")
    bomb_png(d / "b_bomb.png")
    huge_jpeg(d / "c_huge.jpg")
    Image.fromarray(np.full((20, 50, 3), 200, np.uint8)).save(d / "d.png")
    res = tiny_yolo(d)
    assert [r.path.rsplit("/", 1)[-1] for r in res] == ["a.jpg", "d.png"]
    seen = warnings_seen()
    assert "b_bomb.png" in seen and "c_huge.jpg" in seen and "megapixel budget" in seen


def test_bomb_alone_through_the_cli_exits_1_with_one_line(cli, tiny_pt, tmp_path):
    p = bomb_png(tmp_path / "bomb.png")
    code, out, err = cli("predict", "--model", tiny_pt, "--source", p)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and "megapixel budget" in lines[0] and "Traceback" not in err


def test_budget_default_admits_100_megapixel_photos_and_the_env_var_overrides(tmp_path, monkeypatch):
    check_pixels((12240, 8160), "photo.jpg")  # a 100-megapixel camera frame
    assert DEFAULT_MAX_PIXELS >= 100_000_000
    with pytest.raises(ImageError):
        check_pixels((20000, 20000), "bomb.png")
    p = tmp_path / "small.png"
    Image.new("RGB", (10, 10)).save(p)
    monkeypatch.setenv(MAX_PIXELS_ENV, "99")
    with pytest.raises(ImageError, match=MAX_PIXELS_ENV):
        open_image(p)
    monkeypatch.setenv(MAX_PIXELS_ENV, "100")
    assert open_image(p).size == (10, 10)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ImageError, match="not a number"):
        open_image(p)
    monkeypatch.setenv(MAX_PIXELS_ENV, "500000000")  # above Pillow's own limit: ours decides
    check_pixels((20000, 20000), "bomb.png")


# ------------------------------------------------------------------------------------------ nothing readable
def test_folder_where_nothing_could_be_read_is_an_error(tiny_yolo, cli, tiny_pt, tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"not a jpeg")
    (d / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ImageError, match="none of the 2 image"):
        tiny_yolo(d)
    code, out, err = cli("predict", "--model", tiny_pt, "--source", d, "--json")
    assert code == 1 and "none of the 2 image" in json.loads(out)["error"]


def test_val_where_no_image_could_be_read_is_an_error(tiny_yolo, tmp_path):
    from yolo_export.errors import DatasetError

    for split in ("train", "val"):
        for c in (f"c{i}" for i in range(10)):
            (tmp_path / "ds" / split / c).mkdir(parents=True)
            (tmp_path / "ds" / split / c / "x.jpg").write_bytes(b"broken")
    with pytest.raises(DatasetError, match="none of the 10 image"):
        tiny_yolo.val(data=str(tmp_path / "ds"), progress=False)


# ------------------------------------------------------------------------------------------ globs
GLOB_CHILD = r"""
import json, sys
from yolo_export.data.sources import iter_items
print(json.dumps([str(i.path) for i in iter_items(sys.argv[1])]))
"""


def test_glob_with_symlink_loops_ends_and_stays_inside(tmp_path):
    root = tmp_path / "dir"
    (root / "a" / "b").mkdir(parents=True)
    for p in (root / "x.png", root / "a" / "y.png", root / "a" / "b" / "z.png", tmp_path / "outside.png"):
        Image.new("RGB", (8, 8)).save(p)
    (root / "a" / "up").symlink_to("..")              # a loop
    (root / "a" / "b" / "loop").symlink_to("../..")   # another
    (root / "out").symlink_to(tmp_path)               # leaves the root
    (root / "a" / "parent").symlink_to("../..")       # leaves the root too
    for pattern, expect in [("dir/**/*.png", ["dir/a/b/z.png", "dir/a/y.png", "dir/x.png"]),
                            ("dir/*/*.png", ["dir/a/y.png"]),
                            ("dir/*/*/*.png", ["dir/a/b/z.png"])]:
        r = subprocess.run([sys.executable, "-c", GLOB_CHILD, pattern], cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-500:]
        assert json.loads(r.stdout) == expect, pattern
