"""Export time, artefact size and CPU latency per format (OpenVINO, ncnn, Paddle, CoreML beside ONNX Runtime).

    python benchmarks/backend_latency.py                       # yolov8n-cls, nc=1000, imgsz 224, 5 rounds
    python benchmarks/backend_latency.py --imgsz 64 --rounds 2 # quick dry run
    python benchmarks/backend_latency.py --formats onnx openvino openvino-int8 --json out.json

Everything runs in one process (as the benchmark matrix does; Paddle is imported safely after TensorFlow).
Latency is timed with each runtime's own runner, built directly so its thread count can be set: 1 thread and the
runtime's default. Runners are timed in interleaved rounds (every runner once per round, in a rotated order), and
the table gives medians over rounds, and each figure as a ratio to ONNX Runtime at the same batch and threads.
Other processes on the machine move absolute figures a lot; the ratios are what to quote.
CoreML artefacts can only run on macOS: on other systems only their export time and size are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# format label -> (registry format, export kwargs)
FORMATS = {
    "onnx": ("onnx", {"dynamic": True, "batch": 32}),
    "openvino": ("openvino", {"dynamic": True, "batch": 32}),
    "openvino-fp16": ("openvino", {"dynamic": True, "batch": 32, "half": True}),
    "openvino-int8": ("openvino", {"dynamic": True, "batch": 32, "int8": True, "calib_images": 64}),
    "ncnn": ("ncnn", {}),
    "ncnn-fp16": ("ncnn", {"half": True}),
    "paddle": ("paddle", {}),
    "coreml": ("coreml", {}),
    "coreml-fp16": ("coreml", {"half": True}),
    "coreml-int8": ("coreml", {"int8": True}),
}


def make_runner(label: str, path: Path, threads: int | None, pt_model):
    """The runtime's runner for ``path`` with ``threads`` (None: the runtime's default)."""
    fmt = FORMATS[label][0] if label in FORMATS else label
    if fmt == "pytorch":
        import torch

        def run(x, _m=pt_model, _t=threads):
            torch.set_num_threads(_t or DEFAULT_TORCH_THREADS)
            with torch.inference_mode():
                return _m(torch.from_numpy(x)).numpy()

        return run
    from yolo_export import registry

    meta = registry.get(fmt).read_metadata(path)
    if fmt == "onnx":
        from yolo_export.backends.onnx import OrtRunner

        return OrtRunner(path, threads=threads)
    if fmt == "openvino":
        from yolo_export.backends.openvino import OpenVINORunner

        return OpenVINORunner(path, meta, threads=threads)
    if fmt == "ncnn":
        from yolo_export.backends.ncnn import NcnnRunner

        return NcnnRunner(path, meta, threads=threads)
    if fmt == "paddle":
        from yolo_export.backends.paddle import PaddleRunner

        return PaddleRunner(path, threads=threads)
    if fmt == "coreml":
        from yolo_export.backends.coreml import CoreMLRunner

        return CoreMLRunner(path)
    raise ValueError(fmt)


DEFAULT_TORCH_THREADS = 1


def main(argv=None):
    global DEFAULT_TORCH_THREADS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--imgsz", type=int, default=224)
    ap.add_argument("--nc", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds of calls per runner per round")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--formats", nargs="+", default=["onnx", "openvino", "openvino-int8", "ncnn", "paddle",
                                                     "coreml"], help=f"from {', '.join(FORMATS)}")
    ap.add_argument("--json", help="write the results here as JSON")
    args = ap.parse_args(argv)

    import platform

    import torch

    from yolo_export import YOLO
    from yolo_export.utils import set_verbosity

    set_verbosity(False)
    DEFAULT_TORCH_THREADS = torch.get_num_threads()
    work = Path(tempfile.mkdtemp(prefix="backend-latency-"))
    torch.manual_seed(0)
    y = YOLO("yolov8n-cls.yaml", nc=args.nc)
    y.model.imgsz = args.imgsz
    pt = Path(y.save(work / "yolov8n-cls.pt"))
    y = YOLO(pt)
    labels = ["onnx"] + [f for f in args.formats if f != "onnx"]

    exports = {}
    print(f"exporting yolov8n-cls (nc={args.nc}) at imgsz {args.imgsz} to {len(labels)} formats...", file=sys.stderr)
    for label in labels:
        fmt, kw = FORMATS[label]
        out = work / (f"m-{label}" + {"onnx": ".onnx", "coreml": ".mlpackage"}.get(fmt, f"_{fmt}_model"))
        t0 = time.perf_counter()
        try:
            p = y.export(fmt, imgsz=args.imgsz, output=str(out), verify=False, **kw)
        except Exception as e:  # noqa: BLE001 - a failing format is reported, not fatal
            exports[label] = {"status": "failed", "error": str(e).splitlines()[0]}
            print(f"  {label}: export failed: {e}", file=sys.stderr)
            continue
        res = y.last_export
        exports[label] = {"status": "ok", "path": p, "export_s": res.time_s,
                          "export_total_s": round(time.perf_counter() - t0, 2), "size_mb": res.size_mb}
        print(f"  {label}: {res.size_mb:.2f} MB in {res.time_s:.1f} s", file=sys.stderr)

    # runners: (label, threads) -> callable
    thread_opts = [1, None]
    runners = {}
    for label in ["pytorch"] + labels:
        if label != "pytorch" and exports[label]["status"] != "ok":
            continue
        for t in thread_opts:
            try:
                path = Path(exports[label]["path"]) if label != "pytorch" else None
                runners[(label, t)] = make_runner(label, path, t, y.model.float().eval().fuse())
            except Exception as e:  # noqa: BLE001
                msg = str(e).splitlines()[0]
                if label in exports:
                    exports[label].setdefault("runtime", msg)
                break
    rng = np.random.default_rng(0)
    xs = {b: rng.random((b, 3, args.imgsz, args.imgsz), dtype=np.float32) for b in args.batches}

    def call(r, x):
        fb = getattr(r, "fixed_batch", None)
        if fb and len(x) != fb:
            return np.concatenate([r(x[i:i + fb]) for i in range(0, len(x), fb)])
        return r(x)

    # warm up and check agreement with PyTorch at batch 1
    ref = runners[("pytorch", None)](xs[args.batches[0]])
    agree = {}
    for key, r in runners.items():
        out = call(r, xs[args.batches[0]])
        agree[key[0]] = float(np.abs(out - ref).max())
    samples = {(k, b): [] for k in runners for b in args.batches}
    keys = list(samples)
    for rd in range(args.rounds):
        order = keys[rd % len(keys):] + keys[:rd % len(keys)]
        for key in order:
            (label, t), b = key
            r, x = runners[(label, t)], xs[b]
            n, t0 = 0, time.perf_counter()
            while True:
                call(r, x)
                n += 1
                el = time.perf_counter() - t0
                if el >= args.min_time and n >= 2:
                    break
            samples[key].append(el / n * 1e3)
        print(f"  round {rd + 1}/{args.rounds} done", file=sys.stderr)
    torch.set_num_threads(DEFAULT_TORCH_THREADS)

    med = {k: statistics.median(v) for k, v in samples.items()}
    rows = []
    for (label, t), b in keys:
        base = med.get((("onnx", t), b))
        rows.append({"format": label, "threads": t or "default", "batch": b, "ms": round(med[((label, t), b)], 3),
                     "ms_per_image": round(med[((label, t), b)] / b, 3),
                     "vs_onnxruntime": round(med[((label, t), b)] / base, 2) if base else None})
    report = {"machine": {"python": platform.python_version(), "system": platform.system(),
                          "cpu_count": __import__("os").cpu_count(), "torch_threads": DEFAULT_TORCH_THREADS},
              "imgsz": args.imgsz, "nc": args.nc, "rounds": args.rounds, "exports": exports,
              "max_prob_diff_vs_pytorch": agree, "latency": rows}

    print(f"\nexport (yolov8n-cls nc={args.nc}, imgsz {args.imgsz}; export time excludes the parity check)")
    print(f"{'format':16} {'status':8} {'size MB':>8} {'export s':>9}  note")
    for label, e in exports.items():
        note = e.get("runtime") or e.get("error") or ""
        print(f"{label:16} {e['status']:8} {e.get('size_mb', 0):8.2f} {e.get('export_s', 0):9.1f}  {note}")
    print(f"\nlatency: median ms per call over {args.rounds} interleaved rounds; ratio vs ONNX Runtime (same batch,"
          " threads)")
    hdr = "".join(f"  {'b' + str(b) + ' t' + str(t or 'def'):>18}" for t in thread_opts for b in args.batches)
    print(f"{'format':16}{hdr}   max|p-pt|")
    for label in dict.fromkeys(k[0] for k in runners):
        cells = ""
        for t in thread_opts:
            for b in args.batches:
                m = med.get(((label, t), b))
                base = med.get((("onnx", t), b))
                cells += f"  {m:9.2f} ({m / base:4.2f}x)" if m and base else f"  {'-':>18}"
        print(f"{label:16}{cells}   {agree.get(label, float('nan')):.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
