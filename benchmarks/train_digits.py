"""Accuracy and throughput of training on the built-in digits dataset.

1. The README recipe (yolov8n-cls.yaml, digits, imgsz 32, 20 epochs, batch 64, the digits augmentation preset):
   top-1 / top-5 of best.pt on the val split, wall time, training images/s, share of step time spent waiting on data.
2. The ONNX export of best.pt: top-1 on val and the share of val images where its prediction equals the .pt's.
3. Training throughput (images/s, data-wait share) at imgsz 32 and 224, measured in interleaved rounds on a
   subset of the train split (no validation), median over rounds.
4. ``--vs-reference``: the first epochs' val top-1 curve of this project and of the reference package (run in its own
   venv, ``$YOLO_EXPORT_REF_PYTHON`` or ``--ref-python``) at the same settings: scikit-learn's digits upscaled to
   32 px (bilinear, RGB PNG; val: i % 5 == 0), yolov8n-cls.yaml, 5 epochs, imgsz 32, batch 64, workers 0, CPU, both
   with their default hyper-parameters; per-epoch wall time of both. Rounds alternate (ours, reference, ...).

    python benchmarks/train_digits.py [--epochs 20] [--batch 64] [--threads N] [--rounds 3] [--out results.json]
    python benchmarks/train_digits.py --vs-reference [--ref-epochs 5] [--rounds 1] [--threads 2] [--out r.json]

CPU timings swing with other load on the machine: quote medians and ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def recipe(args, project: Path) -> dict:
    from yolo_export import YOLO

    y = YOLO("yolov8n-cls.yaml")
    t0 = time.perf_counter()
    out = y.train(data="digits", epochs=args.epochs, imgsz=32, batch=args.batch, workers=args.workers,
                  threads=args.threads, project=str(project), name="recipe", progress=not args.quiet)
    wall = time.perf_counter() - t0
    res = {"top1": out["top1"], "top5": out["top5"], "wall_s": round(wall, 1), "train_img_per_s": out["images_per_s"],
           "data_wait_share": out["data_wait_share"], "best_epoch": out["best_epoch"], "best": out["best"]}
    try:
        from yolo_export.registry import get

        ok, why = get("onnx").is_available()
        if not ok:
            res["onnx"] = {"skipped": why}
            return res
        ref = YOLO(out["best"]).val(data="digits", predictions=True, progress=False)
        onnx = YOLO(out["best"]).export("onnx", data="digits")
        m = YOLO(onnx).val(data="digits", predictions=True, progress=False)
        same = sum(a == b for a, b in zip(ref["predictions"], m["predictions"]))
        res["pt_val"] = {"top1": ref["top1"], "top5": ref["top5"], "ms_per_img": round(ref["speed"]["inference"], 3)}
        res["onnx"] = {"top1": m["top1"], "top5": m["top5"], "agree": same / len(ref["predictions"]),
                       "n": len(ref["predictions"]), "ms_per_img": round(m["speed"]["inference"], 3)}
    except Exception as e:  # noqa: BLE001 - report, do not lose the training figures
        res["onnx"] = {"error": f"{type(e).__name__}: {e}"}
    return res


def throughput(args, project: Path, imgsz: int, rnd: int) -> dict:
    from yolo_export import YOLO

    y = YOLO("yolov8n-cls.yaml")
    frac = args.fraction_32 if imgsz <= 64 else args.fraction_224
    out = y.train(data="digits", epochs=1, imgsz=imgsz, batch=args.batch if imgsz <= 64 else args.batch_224,
                  workers=args.workers, threads=args.threads, fraction=frac, val=False, plots=False, progress=False,
                  project=str(project), name=f"tp{imgsz}_{rnd}")
    return {"img_per_s": out["images_per_s"], "data_wait_share": out["data_wait_share"]}


REF_TRAIN = r"""
import csv, json, sys, time
from ultralytics import YOLO
data, epochs, project, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
import torch
if threads:
    torch.set_num_threads(threads)
m = YOLO("yolov8n-cls.yaml")
t0 = time.perf_counter()
m.train(data=data, epochs=epochs, imgsz=32, batch=64, workers=0, device="cpu", plots=False, project=project,
        name="ref", exist_ok=True, verbose=False)
wall = time.perf_counter() - t0
rows = list(csv.DictReader(open(f"{project}/ref/results.csv")))
key = next(k for k in rows[0] if "top1" in k)
print(json.dumps({"top1": [round(float(r[key]), 4) for r in rows], "wall_s": round(wall, 2)}))
"""


def digits32(root: Path) -> Path:
    """scikit-learn's digits upscaled to 32 px as an RGB ImageFolder (val: i % 5 == 0), as the reference needs."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = np.clip(np.rint(d.images * (255 / 16)), 0, 255).astype(np.uint8)
    for i, (img, label) in enumerate(zip(imgs, d.target)):
        out = root / ("val" if i % 5 == 0 else "train") / str(label)
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").resize((32, 32), Image.Resampling.BILINEAR).convert("RGB").save(out / f"{i:04d}.png")
    return root


def vs_reference(args, project: Path) -> dict:
    """Per-epoch val top-1 and wall time of both projects on digits-32, in alternating rounds."""
    import subprocess

    from yolo_export import YOLO

    data = digits32(project / "digits32")
    out: dict = {"ours": [], "reference": []}
    for rnd in range(args.rounds):
        y = YOLO("yolov8n-cls.yaml")
        t0 = time.perf_counter()
        y.train(data=str(data), epochs=args.ref_epochs, imgsz=32, batch=64, workers=0, device="cpu",
                threads=args.threads, plots=False, progress=False, project=str(project), name=f"ours{rnd}")
        wall = time.perf_counter() - t0
        hist = [r["metrics/top1"] for r in y.trainer.history] if getattr(y, "trainer", None) else None
        out["ours"].append({"top1": hist, "wall_s": round(wall, 2)})
        print(f"round {rnd + 1} ours: {out['ours'][-1]}", file=sys.stderr)
        if args.ref_python and Path(args.ref_python).exists():
            r = subprocess.run([args.ref_python, "-c", REF_TRAIN, str(data), str(args.ref_epochs),
                                str(project / f"refrun{rnd}"), str(args.threads or 0)],
                               capture_output=True, text=True, timeout=3600)
            doc = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {"error": r.stderr[-500:]}
            out["reference"].append(doc)
            print(f"round {rnd + 1} reference: {doc}", file=sys.stderr)
    for side in ("ours", "reference"):
        runs = [r for r in out[side] if "top1" in r and r["top1"]]
        if runs:
            out[f"{side}_epoch_s_median"] = statistics.median(r["wall_s"] / len(r["top1"]) for r in runs)
    if out.get("reference_epoch_s_median") and out.get("ours_epoch_s_median"):
        out["speed_ratio_ref_over_ours"] = round(out["reference_epoch_s_median"] / out["ours_epoch_s_median"], 2)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batch-224", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds")
    ap.add_argument("--fraction-32", type=float, default=0.5)
    ap.add_argument("--fraction-224", type=float, default=0.06)
    ap.add_argument("--skip-recipe", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--vs-reference", action="store_true", help="only the per-epoch curve against the reference")
    ap.add_argument("--ref-epochs", type=int, default=5)
    ap.add_argument("--ref-python", default=os.environ.get("YOLO_EXPORT_REF_PYTHON", "/tmp/refvenv/bin/python"))
    args = ap.parse_args(argv)

    import torch

    from yolo_export.utils import set_verbosity

    set_verbosity(False if args.quiet else None)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    res = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_avg_1m_start": load,
                       "torch": torch.__version__}, "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        if args.vs_reference:
            args.skip_recipe = args.skip_throughput = True
            res["vs_reference"] = vs_reference(args, project)
        if not args.skip_recipe:
            res["recipe"] = recipe(args, project)
            r = res["recipe"]
            print(f"recipe: top1 {r['top1']:.4f}  top5 {r['top5']:.4f}  wall {r['wall_s']:.0f}s  "
                  f"{r['train_img_per_s']:.0f} train img/s  data wait {r['data_wait_share']:.1%}", file=sys.stderr)
            o = r.get("onnx", {})
            if "agree" in o:
                print(f"onnx: top1 {o['top1']:.4f} (pt {r['pt_val']['top1']:.4f}); same prediction on "
                      f"{o['agree']:.2%} of {o['n']} val images", file=sys.stderr)
        if not args.skip_throughput:
            rounds: dict[int, list[dict]] = {32: [], 224: []}
            for rnd in range(args.rounds):
                for sz in (32, 224):
                    rounds[sz].append(throughput(args, project, sz, rnd))
                    print(f"round {rnd + 1} imgsz {sz}: {rounds[sz][-1]}", file=sys.stderr)
            res["throughput"] = {
                str(sz): {"img_per_s_median": statistics.median(r["img_per_s"] for r in v),
                          "data_wait_share_median": statistics.median(r["data_wait_share"] for r in v),
                          "rounds": v} for sz, v in rounds.items()}
            t = res["throughput"]
            res["throughput"]["ratio_32_over_224"] = round(t["32"]["img_per_s_median"] /
                                                           max(t["224"]["img_per_s_median"], 1e-9), 2)
    res["machine"]["load_avg_1m_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    text = json.dumps(res, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return res


if __name__ == "__main__":
    main()
