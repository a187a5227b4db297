"""Cost of the checked checkpoint reader, as ratios measured side by side in one run (alternating rounds).

    python benchmarks/checkpoint_load.py                       # yolov8n-cls and yolov8x-cls, both file layouts
    python benchmarks/checkpoint_load.py --scales x --layouts reference --rounds 7 --profile
    python benchmarks/checkpoint_load.py --clock cpu              # CPU time: steadier on a busy machine

Checkpoints are built here from the yaml (no download): ``ours`` is this package's plain-dict format, ``reference``
the reference package's layout (a pickled model object, fp16, made by ``tests/ultralytics_fake.py`` as the tests make
it). Rows, per checkpoint:

- ``read_torch_zip``: yolo_export's checked reader alone (zip structure and storage sizes checked before
  allocation, restricted unpickler);
- ``torch.load(weights_only=True)``: torch's restricted loader (the reference layout's classes admitted with
  ``torch.serialization.safe_globals``, so that it can read the file at all);
- ``torch.load(weights_only=False)``: torch's full unpickler (the reference layout's classes importable), which
  runs whatever the file asks for;
- ``load_checkpoint`` (the reader + plain-data walk within budgets, and for the reference layout the import: module
  tree, structure check against a meta-device build) and ``load_checkpoint+build`` (the model built and filled).

Each row prints the median milliseconds and its ratio to ``torch.load(weights_only=True)`` and to the full
``torch.load``. ``--profile`` prints the top of a cProfile of ``read_torch_zip`` on each file.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def build(folder: Path, scale: str, layout: str) -> Path:
    from yolo_export.nn.checkpoint import save_checkpoint
    from yolo_export.nn.model import ClassificationModel

    model = ClassificationModel(f"yolov8{scale}-cls.yaml", nc=1000)
    model.imgsz = 224
    path = folder / f"yolov8{scale}-cls-{layout}.pt"
    if layout == "ours":
        save_checkpoint(path, model, half=True)
    else:
        from ultralytics_fake import make_ultralytics_checkpoint

        make_ultralytics_checkpoint(path, model, imgsz=224)
    return path


@contextlib.contextmanager
def reference_classes(layout: str, *, importable: bool):
    """For the reference layout: its classes admitted to torch's weights_only loader, or importable for the full
    loader (the same throw-away modules the tests pickle it with)."""
    if layout != "reference":
        yield
        return
    import torch
    from ultralytics_fake import _fake_modules, _installed

    mods = _fake_modules()
    if importable:
        with _installed(mods):
            yield
        return
    classes = [v for m in mods.values() for v in vars(m).values() if isinstance(v, type)]
    import enum

    classes += [m.InterpolationMode for m in mods.values() if isinstance(getattr(m, "InterpolationMode", None),
                                                                         enum.EnumMeta)]
    import torch.nn as nn

    classes += [nn.Conv2d, nn.BatchNorm2d, nn.SiLU, nn.Sequential, nn.ModuleList, nn.Dropout, nn.Linear,
                nn.AdaptiveAvgPool2d, nn.Identity, set]
    with _installed(mods), torch.serialization.safe_globals(classes):
        yield


def rows_for(path: Path, layout: str) -> dict:
    import torch

    from yolo_export.nn.checkpoint import build_from_checkpoint, load_checkpoint
    from yolo_export.nn.reference_import import RestrictedUnpickler
    from yolo_export.nn.safe_load import read_torch_zip

    def torch_load(weights_only: bool):
        with reference_classes(layout, importable=not weights_only):
            return torch.load(path, map_location="cpu", weights_only=weights_only)

    return {
        "read_torch_zip": lambda: read_torch_zip(path, RestrictedUnpickler),
        "torch.load(weights_only=True)": lambda: torch_load(True),
        "torch.load(weights_only=False)": lambda: torch_load(False),
        "load_checkpoint": lambda: load_checkpoint(path),
        "load_checkpoint+build": lambda: build_from_checkpoint(load_checkpoint(path)),
    }


def profile(path: Path, top: int) -> None:
    from yolo_export.nn.reference_import import RestrictedUnpickler
    from yolo_export.nn.safe_load import read_torch_zip

    pr = cProfile.Profile()
    pr.enable()
    for _ in range(3):
        read_torch_zip(path, RestrictedUnpickler)
    pr.disable()
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(top)
    print(out.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", default="n,x")
    ap.add_argument("--layouts", default="ours,reference")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="cProfile read_torch_zip (3 reads of each file)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall time, or this process's CPU time "
                    "(steadier on a machine that other jobs keep busy)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # the readers are single-threaded; torch's pools would only add noise
    folder = Path(tempfile.mkdtemp())
    files = {(s, lay): build(folder, s, lay) for s in a.scales.split(",") for lay in a.layouts.split(",")}
    clock = time.perf_counter if a.clock == "wall" else time.process_time
    print(f"load average {os.getloadavg()}, torch {torch.__version__}, {a.rounds} rounds, {a.clock} time")
    for (scale, layout), path in files.items():
        rows = rows_for(path, layout)
        for fn in rows.values():  # warm-up: imports, page cache
            fn()
        times: dict[str, list[float]] = {k: [] for k in rows}
        for r in range(a.rounds):
            keys = list(rows)[r % len(rows):] + list(rows)[:r % len(rows)]
            for k in keys:
                t = clock()
                rows[k]()
                times[k].append((clock() - t) * 1e3)
        med = {k: statistics.median(v) for k, v in times.items()}
        safe, full = med["torch.load(weights_only=True)"], med["torch.load(weights_only=False)"]
        print(f"\nyolov8{scale}-cls, {layout} layout, fp16, {path.stat().st_size / 1e6:.1f} MB")
        print(f"  {'':32s} {'ms':>9s}  {'/ weights_only':>14s}  {'/ full load':>11s}")
        for k, m in med.items():
            print(f"  {k:32s} {m:9.1f}  {m / safe:14.2f}  {m / full:11.2f}")
        if a.profile:
            profile(path, 15)


if __name__ == "__main__":
    main()
