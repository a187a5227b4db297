"""Distributed batch predict on Ray Data against plain local predict, on the same images in the same run.

yolov8n-cls (nc=1000, random init) exported to ONNX at imgsz 224 (dynamic batch); ``--images`` JPEGs (default
5,000 at 320x240). Runs ``predict --output local.jsonl`` (one process) and ``predict --ray --output ray.jsonl`` on a
local Ray cluster of ``--cpus`` CPUs started here (object store 256 MB, usage stats off), then checks the two files
are identical row for row. Reports images/s for both, with and without the Ray cluster's start-up.

    python benchmarks/ray_predict.py [--images 5000] [--cpus 2] [--size 320x240] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def make_jpegs(d: Path, n: int, w: int, h: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        base = np.stack([(xx * (i % 7 + 1)) % 256, (yy * (i % 5 + 2)) % 256, (xx + yy + 9 * i) % 256], -1)
        noise = rng.integers(0, 12, (h, w, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(d / f"im{i:05d}.jpg", quality=90)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    w, h = (int(v) for v in a.size.split("x"))

    import torch

    from yolo_export import YOLO
    from yolo_export.distributed import init_ray, predict_to_file, ray_predict

    work = Path(tempfile.mkdtemp(prefix="yexport-ray-"))
    (work / "images").mkdir()
    t0 = time.perf_counter()
    make_jpegs(work / "images", a.images, w, h)
    out = {"uptime_before": os.popen("uptime").read().strip(), "images": a.images, "size": a.size,
           "cpus": a.cpus, "batch": a.batch, "make_images_s": round(time.perf_counter() - t0, 1)}
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from backend_models import condition  # a confident head, so that top-1 is not decided by noise

    torch.manual_seed(0)
    src = YOLO("yolov8n-cls.yaml")
    condition(src.model, 224, n=16)
    src.save(work / "n1000.pt")
    model = YOLO(work / "n1000.pt").export("onnx", imgsz=224, dynamic=True, batch=32, verify=False)

    local = predict_to_file(model, [str(work / "images")], work / "local.jsonl", batch=a.batch, progress=False)
    out["local"] = {"time_s": local["time_s"], "img_per_s": round(a.images / local["time_s"], 2)}
    print(json.dumps(out), flush=True)

    t0 = time.perf_counter()
    init_ray(num_cpus=a.cpus)
    start = time.perf_counter() - t0
    r = ray_predict(model, str(work / "images"), work / "ray.jsonl", batch=a.batch, progress=False)
    total = start + r["time_s"]
    out["ray"] = {"cluster_start_s": round(start, 2), "predict_s": r["time_s"], "img_per_s": r["images_per_s"],
                  "img_per_s_with_start": round(a.images / total, 2), "errors": r["errors"],
                  "actor_runtime_threads": r["threads"]}
    same = (work / "local.jsonl").read_bytes() == (work / "ray.jsonl").read_bytes()
    out["identical_rows"] = same
    rows = [json.loads(x) for x in (work / "ray.jsonl").read_text().splitlines()]
    out["distinct_top1"] = len({r["top1"] for r in rows})
    out["median_top1_conf"] = sorted(r["confidence"] for r in rows)[len(rows) // 2]
    out["ray_over_local"] = round(out["ray"]["img_per_s"] / out["local"]["img_per_s"], 3)
    out["uptime_after"] = os.popen("uptime").read().strip()
    print(json.dumps(out, indent=1), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    import shutil

    shutil.rmtree(work / "images", ignore_errors=True)


if __name__ == "__main__":
    main()
