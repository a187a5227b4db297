"""This project against the reference package, in one run, as ratios (the machine may be shared: alternating rounds,
the same thread count, the load printed with the figures).

1. Predict end to end: the same ONNX model (yolov8n-cls, nc=1000, imgsz 224, exported once) on the same 640x480
   JPEGs, file path to probabilities, batch 1, through ``YOLO(onnx).predict`` here and the reference's
   ``YOLO(onnx).predict`` in its venv (a long-lived worker, so its start-up is not timed). Rounds alternate and
   swap order; each side's median round time.
2. Training throughput: yolov8n-cls.yaml on digits upscaled to 32 px (ImageFolder, val: i % 5 == 0), the same
   epochs, imgsz 32, batch 64, workers 0, CPU, validation each epoch, both timed around their ``train`` call.

    python benchmarks/vs_reference.py [--rounds 3] [--images 16] [--threads 2] [--epochs 2] [--out results.json]

Needs the reference venv (``bash .ci/make_ref_venv.sh``; its python in ``YOLO_EXPORT_REF_PYTHON`` or --ref-python).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REF_SIDE = Path(__file__).resolve().parent.parent / "tests" / "reference" / "ref_side.py"


class RefWorker:
    """The reference package in its own venv, answering timed requests (``ref_side.py serve``)."""

    def __init__(self, python: str, threads: int, workdir: Path):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.p = subprocess.Popen([python, str(REF_SIDE), "serve", "--out", str(workdir)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=workdir)

    def ask(self, **req) -> float:
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        for line in self.p.stdout:
            if line.startswith("@@result "):
                return json.loads(line[len("@@result "):])["s"]
        raise RuntimeError(f"the reference worker stopped (rc {self.p.wait()})")

    def close(self):
        self.p.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        self.p.stdin.close()
        self.p.wait(timeout=60)


def make_jpegs(d: Path, n: int) -> list[str]:
    import numpy as np
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
        img = np.stack([xx / 640 * 180 + 40, yy / 480 * 160 + 50, (xx + yy) / 1120 * 200 + 30], -1)
        img += 40 * np.sin(xx / (9 + i))[..., None] * np.cos(yy / (13 + i))[..., None] + rng.normal(0, 8, img.shape)
        p = d / f"photo{i:02d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p, quality=90)
        out.append(str(p))
    return out


def make_digits32(root: Path) -> tuple[Path, int]:
    """train_digits.py's digits-32 ImageFolder, and its number of training images."""
    from train_digits import digits32  # beside this script

    digits32(root)
    return root, sum(1 for _ in (root / "train").rglob("*.png"))


def predict_rounds(ref: RefWorker, onnx: str, images: list[str], rounds: int) -> dict:
    from yolo_export import YOLO

    ours_model = YOLO(onnx)
    ours_model.predict(images[:2])  # warm-up: session creation and first runs
    ref.ask(cmd="predict", model=onnx, images=images[:2], imgsz=224)
    ours, theirs = [], []
    for r in range(rounds):
        for side in (("ours", "ref") if r % 2 == 0 else ("ref", "ours")):
            if side == "ours":
                t0 = time.perf_counter()
                ours_model.predict(images)
                ours.append(time.perf_counter() - t0)
            else:
                theirs.append(ref.ask(cmd="predict", model=onnx, images=images, imgsz=224))
    o, t = statistics.median(ours), statistics.median(theirs)
    return {"images": len(images), "ours_ms_per_image": round(1000 * o / len(images), 2),
            "reference_ms_per_image": round(1000 * t / len(images), 2), "speedup_ours_vs_reference": round(t / o, 3),
            "rounds_ours_s": [round(x, 3) for x in ours], "rounds_reference_s": [round(x, 3) for x in theirs]}


def train_rounds(ref: RefWorker, data: Path, n_train: int, epochs: int, rounds: int, threads: int, work: Path) -> dict:
    from yolo_export import YOLO

    ours, theirs = [], []
    for r in range(rounds):
        for side in (("ours", "ref") if r % 2 == 0 else ("ref", "ours")):
            if side == "ours":
                t0 = time.perf_counter()
                YOLO("yolov8n-cls.yaml").train(data=str(data), epochs=epochs, imgsz=32, batch=64, workers=0,
                                               threads=threads, project=str(work / "ours"), name=f"r{r}",
                                               progress=False, plots=False)
                ours.append(time.perf_counter() - t0)
            else:
                theirs.append(ref.ask(cmd="train", cfg="yolov8n-cls.yaml", data=str(data), epochs=epochs, imgsz=32,
                                      batch=64, project=str(work / "ref")))
    o, t = statistics.median(ours), statistics.median(theirs)
    return {"epochs": epochs, "train_images": n_train, "ours_img_per_s": round(n_train * epochs / o, 1),
            "reference_img_per_s": round(n_train * epochs / t, 1), "speedup_ours_vs_reference": round(t / o, 3),
            "rounds_ours_s": [round(x, 2) for x in ours], "rounds_reference_s": [round(x, 2) for x in theirs]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref-python", default=os.environ.get("YOLO_EXPORT_REF_PYTHON"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--train-rounds", type=int, default=2)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    if not a.ref_python or not Path(a.ref_python).exists():
        print("needs the reference venv: bash .ci/make_ref_venv.sh, then YOLO_EXPORT_REF_PYTHON=<its python>")
        return 2
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import torch

    from yolo_export import YOLO

    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="vs-ref-"))
    res = {"load_before": os.getloadavg(), "threads": a.threads, "cpus": os.cpu_count()}
    onnx = YOLO("yolov8n-cls.yaml").export(format="onnx", imgsz=224, output=str(work / "yolov8n-cls-1000.onnx"))
    images = make_jpegs(work / "jpegs", a.images)
    data, n_train = make_digits32(work / "digits32")
    ref = RefWorker(a.ref_python, a.threads, work)
    try:
        res["predict_onnx_224_640x480_jpeg"] = predict_rounds(ref, onnx, images, a.rounds)
        res["train_digits32"] = train_rounds(ref, data, n_train, a.epochs, a.train_rounds, a.threads, work)
    finally:
        ref.close()
        shutil.rmtree(work, ignore_errors=True)
    res["load_after"] = os.getloadavg()
    res["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
