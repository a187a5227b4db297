"""TensorFlow-family formats side by side: export time, size, parity with the .pt on a dataset split, latency.

    python benchmarks/tf_formats.py --model best.pt --data digits [--formats saved_model,pb,tflite,...] [--rounds 5]

Each format is exported (INT8 calibrated on --data), then every artefact and the .pt run the same preprocessed
val images through AutoBackend. Latency is batch 1, measured in interleaved rounds (one pass over all formats per
round, so that load from other processes hits every format alike); medians and ratios to ONNX Runtime are printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path


SPECS = {
    "onnx": ("onnx", {}), "saved_model": ("saved_model", {}), "pb": ("pb", {}),
    "tflite": ("tflite", {}), "tflite_fp16": ("tflite", {"half": True}), "tflite_int8": ("tflite", {"int8": True}),
    "tfjs": ("tfjs", {}), "tfjs_fp16": ("tfjs", {"half": True}), "edgetpu": ("edgetpu", {}),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=None, help="dataset for INT8 calibration and the comparison (val split)")
    ap.add_argument("--formats", default="onnx,saved_model,pb,tflite,tflite_fp16,tflite_int8,tfjs,edgetpu")
    ap.add_argument("--n", type=int, default=100000, help="max val images compared")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20, help="batch-1 runs per format per round")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args(argv)

    import torch

    from yolo_export import YOLO
    from yolo_export.autobackend import AutoBackend
    from yolo_export.data.samples import calibration_batch, check_inputs
    from yolo_export.verify import compare

    work = Path(tempfile.mkdtemp(prefix="tf-bench-"))
    src = work / Path(a.model).name
    shutil.copy(a.model, src)
    y = YOLO(src)
    imgsz = y.imgsz
    x = (calibration_batch(a.data, imgsz, a.n, y.preprocess, split="val") if a.data
         else check_inputs(imgsz, 64, None, y.preprocess))
    with torch.no_grad():
        ref = y.model.float().eval()(torch.from_numpy(x)).numpy()
    rows, runners = [], {}
    for key in a.formats.split(","):
        fmt, kw = SPECS[key]
        row = {"format": key}
        try:
            path = y.export(fmt, data=a.data, output=str(work / f"{key}{_suffix(fmt)}"), **kw)
            res = y.last_export
            row.update(export_s=res.time_s, size_mb=res.size_mb, path=path)
            ab = AutoBackend(path)
            out = ab.run(x)
            c = compare(ref, out, None)
            row.update(max_abs_diff=c["max_abs_diff"], top1_agreement=c["top1_agreement"], n=c["n"])
            runners[key] = ab
        except Exception as e:  # noqa: BLE001 - a benchmark reports, it does not stop
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    one = x[:1]
    lat = {k: [] for k in runners}
    for _ in range(a.rounds):
        for k, ab in runners.items():
            ab.run(one)
            t0 = time.perf_counter()
            for _ in range(a.iters):
                ab.run(one)
            lat[k].append((time.perf_counter() - t0) / a.iters * 1e3)
    base = statistics.median(lat["onnx"]) if "onnx" in lat else None
    for row in rows:
        k = row["format"]
        if k in lat:
            row["latency_ms"] = round(statistics.median(lat[k]), 3)
            if base:
                row["latency_vs_onnx"] = round(row["latency_ms"] / base, 2)
    print(f"\n{len(x)} images, imgsz {imgsz}, batch 1, {a.rounds} interleaved rounds x {a.iters} runs (median)")
    print(f"{'format':<13}{'export s':>9}{'MB':>8}{'max|dp|':>10}{'top-1 agr':>10}{'ms':>8}{'vs onnx':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['format']:<13} {r['error']}")
            continue
        print(f"{r['format']:<13}{r['export_s']:>9.1f}{r['size_mb']:>8.2f}{r['max_abs_diff']:>10.2e}"
              f"{r['top1_agreement']:>10.2%}{r.get('latency_ms', float('nan')):>8.2f}"
              f"{r.get('latency_vs_onnx', float('nan')):>8.2f}")
    for ab in runners.values():
        ab.close()
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return rows


def _suffix(fmt):
    from yolo_export import registry

    return registry.get(fmt).suffix


if __name__ == "__main__":
    main()
