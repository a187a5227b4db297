"""Preprocessing against the reference package: input tensors and decode+preprocess time per image.

Writes photo-like JPEGs of several sizes and aspect ratios, builds the predict input tensor of each (imgsz 224 by
default) through this project (exact, and the ``fast`` opt-in) and through the reference package's own code in its
venv (its decoder ``ultralytics.utils.patches.imread``, then the host part of ``classify_transforms`` the classify
predictor runs, then BGR->RGB, /255 as its base predictor does), and prints the max / mean absolute difference per
size. Then it times decode+preprocess per image for exact and fast in alternating rounds in one process.

    python benchmarks/preprocess_exact.py [--ref-python /tmp/refvenv/bin/python] [--imgsz 224] [--rounds 5]

The reference venv is optional: without it only the timings are printed. CPU timings swing with other load: quote
the ratio measured in the same run, and the load (``uptime``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = [(640, 480), (1920, 1080), (480, 640), (333, 500), (4032, 3024), (224, 224), (300, 225), (97, 130)]

REF_SCRIPT = r"""
import sys, json, numpy as np
from PIL import Image
from ultralytics.utils.patches import imread
from ultralytics.data.augment import classify_transforms
import torchvision.transforms as T
imgsz, out, files = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
host = T.Compose(classify_transforms(imgsz).transforms[:2])   # what ClassificationPredictor.pre_transform runs
arrs = []
for f in files:
    im0 = imread(f)                                             # BGR, as its loader decodes
    x = np.array(host(Image.fromarray(im0)))                    # resize + centre crop on the host
    arrs.append(np.ascontiguousarray(x[..., ::-1].transpose(2, 0, 1)).astype(np.float32) / 255.0)  # BGR->RGB, /255
np.save(out, np.stack(arrs))
"""


def photo(w: int, h: int, seed: int) -> np.ndarray:
    """A photo-like RGB image: smooth colour fields, edges and sensor-like noise."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (max(2, h // 40), max(2, w // 40), 3), dtype=np.uint8))
    im = small.resize((w, h), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(1))
    a = np.asarray(im, dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    a[(xx // max(1, w // 7) + yy // max(1, h // 5)) % 2 == 0] *= 0.7  # hard edges
    a += rng.normal(0, 6, a.shape)
    return np.clip(a, 0, 255).astype(np.uint8)


def write_images(folder: Path) -> list[str]:
    from PIL import Image

    files = []
    for i, (w, h) in enumerate(SIZES):
        p = folder / f"photo_{w}x{h}.jpg"
        Image.fromarray(photo(w, h, i)).save(p, quality=90)
        files.append(str(p))
    return files


def ours(files: list[str], imgsz: int, fast: bool) -> np.ndarray:
    from yolo_export.data.transforms import default_preprocess, preprocess

    pp = dict(default_preprocess(imgsz), **({"fast": True} if fast else {}))
    return np.stack([preprocess(f, pp) for f in files])


def reference(files: list[str], imgsz: int, py: str, tmp: Path) -> np.ndarray | None:
    if not Path(py).exists():
        return None
    out = tmp / "ref.npy"
    r = subprocess.run([py, "-c", REF_SCRIPT, str(imgsz), str(out), json.dumps(files)], capture_output=True,
                       text=True, timeout=600)
    if r.returncode:
        print(f"reference failed: {r.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return np.load(out)


def timings(files: list[str], imgsz: int, rounds: int) -> dict:
    """ms per image, decode + preprocess, exact vs fast in alternating rounds; median over rounds."""
    res = {"exact": [], "fast": []}
    for _ in range(rounds):
        for mode in ("exact", "fast"):
            t0 = time.perf_counter()
            ours(files, imgsz, mode == "fast")
            res[mode].append((time.perf_counter() - t0) * 1e3 / len(files))
    return {k: round(statistics.median(v), 2) for k, v in res.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref-python", default=os.environ.get("YOLO_EXPORT_REF_PYTHON", "/tmp/refvenv/bin/python"))
    ap.add_argument("--imgsz", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", help="write the results as JSON here")
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        files = write_images(tmp)
        res: dict = {"imgsz": a.imgsz, "load": os.getloadavg()[0], "sizes": {}}
        ref = reference(files, a.imgsz, a.ref_python, tmp)
        ex, fa = ours(files, a.imgsz, False), ours(files, a.imgsz, True)
        if ref is not None:
            for (w, h), r, e, f in zip(SIZES, ref, ex, fa):
                res["sizes"][f"{w}x{h}"] = {
                    "exact_max_abs": float(np.abs(e - r).max()), "exact_equal": bool(np.array_equal(e, r)),
                    "fast_max_255": round(float(np.abs(f - r).max()) * 255, 2),
                    "fast_mean_255": round(float(np.abs(f - r).mean()) * 255, 3)}
        for key, sub in (("all_sizes", files), ("640x480", files[:1] * 8), ("4032x3024", files[4:5])):
            t = timings(sub, a.imgsz, a.rounds)
            res.setdefault("ms_per_img", {})[key] = dict(t, exact_over_fast=round(t["exact"] / t["fast"], 2))
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
