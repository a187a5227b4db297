"""Cost of the checked checkpoint reader, as ratios measured side by side in one run (alternating rounds).

    python benchmarks/checkpoint_load.py [--scale x] [--rounds 5]

Rows: torch.load(weights_only=True) vs yolo_export's read_torch_zip (zip structure and storage sizes checked, restricted
unpickler), then load_checkpoint (+ plain-data walk within budgets) and build_from_checkpoint (meta-device build and
shape check before the real build). Prints median milliseconds and ratios; say what the load was (uptime).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", default="n")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    import torch

    from yolo_export.nn.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint
    from yolo_export.nn.model import ClassificationModel
    from yolo_export.nn.reference_import import RestrictedUnpickler
    from yolo_export.nn.safe_load import read_torch_zip

    path = Path(tempfile.mkdtemp()) / f"yolov8{a.scale}-cls.pt"
    save_checkpoint(path, ClassificationModel(f"yolov8{a.scale}-cls.yaml"), half=True)
    rows = {
        "torch.load(weights_only=True)": lambda: torch.load(path, map_location="cpu", weights_only=True),
        "read_torch_zip": lambda: read_torch_zip(path, RestrictedUnpickler),
        "load_checkpoint": lambda: load_checkpoint(path),
        "load_checkpoint+build": lambda: build_from_checkpoint(load_checkpoint(path)),
    }
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(a.rounds):
        for k, fn in rows.items():
            t = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t) * 1e3)
    base = statistics.median(times["torch.load(weights_only=True)"])
    print(f"yolov8{a.scale}-cls fp16 checkpoint, {path.stat().st_size / 1e6:.1f} MB; load average {os.getloadavg()}")
    for k, v in times.items():
        m = statistics.median(v)
        print(f"{k:32s} {m:9.1f} ms  x{m / base:.2f}")


if __name__ == "__main__":
    main()
