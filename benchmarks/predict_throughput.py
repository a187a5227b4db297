"""Predict throughput through the same API for .pt, TorchScript and ONNX (yolov8n-cls, nc=1000, imgsz 224).

Generates a folder of 640x480 JPEGs, then, in interleaved rounds (so background load hits every format alike):
  - end-to-end ms per image of ``YOLO(model).predict(folder, batch=B)`` (wall time / images), split into the
    preprocess / inference / postprocess times the Results carry;
  - the bare runtime call on a ready tensor (``AutoBackend.run``) at the same batch;
  - the share of end-to-end time spent outside the runtime call.
Also times ``yexport --help`` and ``yexport model.pt --format onnx`` as whole processes.

    python benchmarks/predict_throughput.py [--images 64] [--rounds 3] [--threads 1] [--json out.json]
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


def make_jpegs(d: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    for i in range(n):
        base = np.stack([(xx * (i % 7 + 1)) % 256, (yy * (i % 5 + 2)) % 256, (xx + yy + 9 * i) % 256], -1)
        noise = rng.integers(0, 12, (480, 640, 3))  # mild sensor-like noise
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(d / f"im{i:03d}.jpg", quality=90)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for torch and ONNX Runtime")
    ap.add_argument("--imgsz", type=int, default=224)
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    from yolo_export import YOLO
    from yolo_export.data.transforms import default_preprocess, preprocess

    work = Path(tempfile.mkdtemp(prefix="yexport-bench-"))
    imgs = work / "images"
    imgs.mkdir()
    make_jpegs(imgs, a.images)
    torch.manual_seed(0)
    src = YOLO("yolov8n-cls.yaml")
    src.model.imgsz = a.imgsz
    pt = work / "yolov8n-cls.pt"
    src.save(pt)
    models = {"pytorch": str(pt), "torchscript": YOLO(pt).export("torchscript", imgsz=a.imgsz, dynamic=True)}
    try:
        models["onnx"] = YOLO(pt).export("onnx", imgsz=a.imgsz, dynamic=True, batch=32)
    except Exception as e:  # noqa: BLE001
        print(f"onnx skipped: {e}", file=sys.stderr)

    # decode + preprocess alone
    files = sorted(imgs.glob("*.jpg"))
    pp = default_preprocess(a.imgsz)
    pre = []
    for _ in range(a.rounds):
        t = time.perf_counter()
        for f in files:
            preprocess(f, pp)
        pre.append((time.perf_counter() - t) * 1e3 / len(files))

    runners = {}
    for name, path in models.items():
        y = YOLO(path)
        if name == "onnx":
            from yolo_export.backends.onnx import OrtRunner


            ab = y.backend()
            ab.runner = OrtRunner(path, threads=a.threads)
        runners[name] = y
    x1 = np.stack([preprocess(files[0], pp)])
    x32 = np.stack([preprocess(f, pp) for f in files[:32]])
    res = {n: {"e2e_b1": [], "e2e_b32": [], "bare_b1": [], "bare_b32": [], "pre": [], "inf": [], "post": []}
           for n in runners}
    for y in runners.values():  # warm-up
        y.predict(files[:4])
        y.backend().run(x32)
    for _ in range(a.rounds):
        for name, y in runners.items():
            ab = y.backend()
            t = time.perf_counter()
            rs = y.predict(imgs, batch=1)
            res[name]["e2e_b1"].append((time.perf_counter() - t) * 1e3 / len(rs))
            res[name]["pre"].append(statistics.mean(r.speed["preprocess"] for r in rs))
            res[name]["inf"].append(statistics.mean(r.speed["inference"] for r in rs))
            res[name]["post"].append(statistics.mean(r.speed["postprocess"] for r in rs))
            t = time.perf_counter()
            rs = y.predict(imgs, batch=32)
            res[name]["e2e_b32"].append((time.perf_counter() - t) * 1e3 / len(rs))
            t = time.perf_counter()
            for _ in range(len(files)):
                ab.run(x1)
            res[name]["bare_b1"].append((time.perf_counter() - t) * 1e3 / len(files))
            t = time.perf_counter()
            reps = max(1, len(files) // 32)
            for _ in range(reps):
                ab.run(x32)
            res[name]["bare_b32"].append((time.perf_counter() - t) * 1e3 / (32 * reps))

    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in res.items()}
    for d in med.values():
        d["outside_runtime_share_b1"] = max(0.0, d["e2e_b1"] - d["bare_b1"]) / d["e2e_b1"]
        d["b32_vs_b1_per_image"] = d["e2e_b32"] / d["e2e_b1"]

    # whole-process timings
    def wall(cmd, reps):
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    yexport = [sys.executable, "-m", "yolo_export"]
    help_s = wall([*yexport, "--help"], 5)
    onnx_s = wall([*yexport, str(pt), "--format", "onnx", "--imgsz", str(a.imgsz), "-o", str(work / "p.onnx")], 2) \
        if "onnx" in models else None

    print(f"\n{a.images} JPEGs 640x480 -> {a.imgsz}, {a.threads} thread(s), median of {a.rounds} interleaved rounds")
    print(f"decode+preprocess alone: {statistics.median(pre):.3f} ms/image")
    hdr = f"{'format':<12}{'e2e b1':>9}{'pre':>8}{'infer':>8}{'post':>8}{'bare b1':>9}{'outside':>9}" \
          f"{'e2e b32':>9}{'bare b32':>9}{'b32/b1':>8}"
    print(hdr)
    for n, d in med.items():
        print(f"{n:<12}{d['e2e_b1']:>9.2f}{d['pre']:>8.2f}{d['inf']:>8.2f}{d['post']:>8.3f}{d['bare_b1']:>9.2f}"
              f"{d['outside_runtime_share_b1']:>9.1%}{d['e2e_b32']:>9.2f}{d['bare_b32']:>9.2f}"
              f"{d['b32_vs_b1_per_image']:>8.2f}")
    print("(ms per image; 'outside' = share of end-to-end time outside the runtime call at batch 1)")
    print(f"`yexport --help`: {help_s * 1e3:.0f} ms; `yexport model.pt --format onnx`: "
          f"{onnx_s:.1f} s" if onnx_s else "")
    out = {"images": a.images, "imgsz": a.imgsz, "threads": a.threads, "rounds": a.rounds,
           "preprocess_ms": statistics.median(pre), "formats": med, "help_s": help_s, "export_onnx_s": onnx_s}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
