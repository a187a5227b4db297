"""ONNX INT8, MNN and ExecuTorch against the .pt and the fp32 ONNX: export time, size, top-1 agreement with the
.pt on the digits val split, and batch-1 latency (1 thread, interleaved rounds, medians; quote the ratios).

    python benchmarks/new_formats.py runs/classify/train/weights/best.pt [--rounds 7] [--out results.json]

The model should be trained on digits (e.g. ``YOLO('yolov8n-cls.yaml').train(data='digits', imgsz=32)``), so that
the agreement figures mean something; the INT8 goal is >= 98 % top-1 agreement with the .pt.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROWS = [  # label, format, export kwargs
    ("onnx fp32", "onnx", {}),
    ("onnx int8", "onnx", {"int8": True, "data": "digits"}),
    ("mnn fp32", "mnn", {}),
    ("mnn fp16-weights", "mnn", {"half": True}),
    ("mnn int8-weights", "mnn", {"int8": True}),
    ("executorch fp32", "executorch", {}),
]


def runner_1thread(fmt: str, path: Path):
    if fmt == "onnx":
        from yolo_export.backends.onnx import OrtRunner

        return OrtRunner(path, threads=1)
    if fmt == "mnn":
        from yolo_export.backends.mnn import MNNRunner

        return MNNRunner(path, threads=1)
    import torch

    torch.set_num_threads(1)
    from yolo_export.backends.executorch import ExecuTorchRunner

    return ExecuTorchRunner(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--out")
    a = ap.parse_args(argv)

    import torch

    from yolo_export import YOLO, registry
    from yolo_export.data.samples import calibration_batch, list_split_images

    work = Path(tempfile.mkdtemp(prefix="yx-bench-"))
    pt = Path(shutil.copy(a.model, work / "model.pt"))
    y = YOLO(pt)
    imgsz = y.imgsz
    nval = len(list_split_images(__import__("yolo_export.data.datasets", fromlist=["x"]).resolve_dataset("digits"),
                                 "val"))
    x = calibration_batch("digits", imgsz, nval, y.preprocess, split="val")
    model = y.model.float().eval().fuse()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    rows, runners = [], {}
    for label, fmt, kw in ROWS:
        ok, why = registry.get(fmt).is_available()
        if not ok:
            rows.append({"label": label, "status": f"skipped: {why}"})
            continue
        extra = {"calib_images": a.calib_images} if kw.get("int8") and fmt == "onnx" else {}
        out = work / f"{label.replace(' ', '_')}{registry.get(fmt).suffix}"
        t0 = time.perf_counter()
        y.export(fmt, output=str(out), **kw, **extra)
        dt = time.perf_counter() - t0
        ab = YOLO(out).backend()
        got = ab.run(x)
        rows.append({"label": label, "status": "ok", "export_s": round(dt, 1),
                     "size_mb": round(out.stat().st_size / 1e6, 3),
                     "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
                     "max_prob_diff": float(np.abs(got - ref).max()), "n": len(x)})
        runners[label] = runner_1thread(fmt, out)
    torch.set_num_threads(1)
    x1 = np.ascontiguousarray(x[:1])

    def pt_run(v, _m=model):
        with torch.no_grad():
            return _m(torch.from_numpy(v)).numpy()

    runners = {"pytorch eager": pt_run, **runners}
    times = {k: [] for k in runners}
    for _ in range(a.rounds):  # interleaved: every runner once per round
        for k, r in runners.items():
            r(x1)
            t0 = time.perf_counter()
            for _ in range(a.iters):
                r(x1)
            times[k].append((time.perf_counter() - t0) / a.iters * 1e3)
    lat = {k: float(np.median(v)) for k, v in times.items()}
    base = lat.get("onnx fp32")
    for r in rows:
        if r["label"] in lat:
            r["latency_ms"] = round(lat[r["label"]], 3)
            if base:
                r["latency_vs_onnx_fp32"] = round(lat[r["label"]] / base, 2)
    rows.insert(0, {"label": "pytorch eager", "latency_ms": round(lat["pytorch eager"], 3), "n": len(x)})
    print(f"{'format':<20}{'export s':>9}{'MB':>8}{'top-1 agr':>10}{'max diff':>10}{'ms (1 thr)':>11}{'x onnx':>8}")
    for r in rows:
        print(f"{r['label']:<20}{r.get('export_s', ''):>9}{r.get('size_mb', ''):>8}"
              f"{format(r['top1_agreement'], '.2%') if 'top1_agreement' in r else '':>10}"
              f"{format(r['max_prob_diff'], '.2g') if 'max_prob_diff' in r else '':>10}"
              f"{r.get('latency_ms', ''):>11}{r.get('latency_vs_onnx_fp32', ''):>8}  {r.get('status', '')}")
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
