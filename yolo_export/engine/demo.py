"""The README's end-to-end job, through the Python API: train yolov8n-cls on the built-in digits, validate it, run
the benchmark matrix (each format exported, run on the val split and judged against the ``.pt``; each row in its own
child process with a timeout, see ``isolation.py``), and predict a few val images with the fastest export that
passed. ``yexport demo`` prints what :func:`run_demo` returns.
"""

from __future__ import annotations

import time
from pathlib import Path

from yolo_export.utils import LOGGER

# The README recipe: yolov8n-cls on the built-in digits at imgsz 32 (the digits augmentation preset applies).
RECIPE = {"model": "yolov8n-cls.yaml", "data": "digits", "epochs": 20, "imgsz": 32, "batch": 64, "workers": 0,
          "threads": 1}

# matrix status -> the demo's words
STATUS = {"passed": "ok", "not_available": "skipped", "export_failed": "export failed", "exported_only": "exported",
          "failed_parity": "parity failed", "failed_accuracy": "ok"}


def run_demo(project: str = "runs/demo", epochs: int = RECIPE["epochs"], imgsz: int = RECIPE["imgsz"],
             batch: int = RECIPE["batch"], formats: list[str] | None = None, workers: int = RECIPE["workers"],
             threads: int = RECIPE["threads"], device: str | None = None, timeout: float | None = 600,
             progress: bool = True) -> dict:
    """Train, validate, benchmark every format (``formats``: all installed), predict five val images."""
    from yolo_export.engine.model import YOLO

    t0 = time.perf_counter()
    tr = YOLO(RECIPE["model"]).train(data=RECIPE["data"], epochs=epochs, imgsz=imgsz, batch=batch, workers=workers,
                                      threads=threads, project=project, name="train", exist_ok=True, device=device,
                                      progress=progress)
    best = Path(tr["best"])
    LOGGER.info(f"\nvalidating {best} ...")
    ref = YOLO(best).val(data=RECIPE["data"], predictions=True, progress=False)
    rows = format_rows(best, formats, project, device, timeout, progress)
    pred_model = fastest_export(rows) or str(best)
    files = ref["files"][:: max(1, len(ref["files"]) // 5)][:5]
    return {"train": {k: tr[k] for k in ("top1", "top5", "best_epoch", "epochs_run", "time_s", "images_per_s",
                                         "data_wait_share", "save_dir")},
            "val": {k: ref[k] for k in ("top1", "top5", "n", "per_class")},
            "formats": rows, "predict": {"model": pred_model, "results": predictions(pred_model, files)},
            "time_s": round(time.perf_counter() - t0, 1)}


def format_rows(best: Path, formats, project, device, timeout, progress) -> list[dict]:
    """The benchmark matrix on the val split, one demo row per format at its default precision (fp32 but for a
    format that only makes INT8), the source first."""
    from yolo_export.engine.benchmark import benchmark

    LOGGER.info("benchmark matrix: export every format, run it on the val split, compare with the .pt ...")
    res = benchmark(best, data=RECIPE["data"], formats=formats, precisions="default", device=device or "cpu",
                    project=project, name="benchmark", progress=progress, timeout=timeout)
    rows = []
    for r in res["rows"]:
        row = {"format": r["format"], "status": STATUS.get(r["status"], r["status"]), "path": None,
               "size_mb": r["size_mb"], "export_s": r["export_s"], "top1": r["top1"], "top5": r["top5"],
               "agree": r["top1_agreement"], "ms_per_img": _round(r["ms_per_img"]), "note": r["reason"] or ""}
        if r["reason"] == "reference":  # the source row: the .pt itself
            row.update(path=str(best), size_mb=round(best.stat().st_size / 1e6, 2), export_s=None,
                       note="source (EMA weights, fp16 stored)")
        else:
            row["path"] = r["path"]
        if r["status"] == "exported_only":
            row["note"] = f"not run here: {r['reason']}"
        rows.append(row)
    return rows


def fastest_export(rows: list[dict]) -> str | None:
    """The artefact of the export that passed with the lowest batch-1 latency (None when none did)."""
    ok = [r for r in rows if r["status"] == "ok" and r["export_s"] is not None and r["path"] and r["ms_per_img"]]
    return min(ok, key=lambda r: r["ms_per_img"])["path"] if ok else None


def predictions(model: str, files: list[str]) -> list[dict]:
    from yolo_export.engine.model import YOLO

    out = []
    for r in YOLO(model).predict(files):
        out.append({"image": r.path, "true": Path(r.path).parent.name, "pred": r.names[r.probs.top1],
                    "conf": round(float(r.probs.top1conf), 4)})
    return out


def _round(v):
    return None if v is None else round(v, 3)
