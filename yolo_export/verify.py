"""Numerical parity of an exported artefact against the model it came from.

After every export, the artefact runs (as a loaded model, exactly as predict runs it) on the same inputs as
the source PyTorch model. We report the max absolute difference of the class probabilities and the top-1
agreement. A random-init model gives near-uniform probabilities whose top-1 is decided by differences smaller
than float rounding, so agreement is judged on *decisive* samples: those whose reference top-1 leads the
runner-up by more than the format's tolerance (all samples, for a trained model). Both figures are stored.

:func:`judge` is the one rule that passes or fails an artefact, used by the export-time check here and by the
benchmark matrix (``engine/benchmark.py``): the format's declared tolerance (max abs probability difference, minimum
top-1 agreement on decisive samples) and, for INT8 judged on enough real images, the :data:`INT8_FLOOR`.
"""

from __future__ import annotations

import time

import numpy as np

from yolo_export.data.samples import check_inputs
from yolo_export.errors import VerificationError


# INT8 artefacts keep at least this top-1 agreement with their source on real images. Judged only on sets of at
# least FLOOR_MIN_SAMPLES decisive real images (the matrix's val split): on the export check's few inputs one
# disagreement moves the figure by several percent, so there the declared (sanity) minimum applies alone.
INT8_FLOOR = 0.98
FLOOR_MIN_SAMPLES = 100


def judge(ref: np.ndarray, out: np.ndarray, tolerance: dict, precision: str, real_images: bool) -> tuple[dict, list]:
    """Compare ``out`` with ``ref`` (N x classes probabilities) under a backend's ``tolerance`` table
    ({precision: (max abs diff or None, min top-1 agreement on decisive samples)}). Returns the figures (with the
    bounds applied) and the list of problems, one phrase each (empty: passed)."""
    tol, min_agree = tolerance.get(precision, (None, 0.9))
    res = compare(ref, out, tol)
    if precision == "int8" and real_images and res["decisive"] >= FLOOR_MIN_SAMPLES:
        min_agree = max(min_agree, INT8_FLOOR)
    res.update(precision=precision, tolerance=tol, min_agreement=min_agree)
    problems = []
    if tol is not None and res["max_abs_diff"] > tol:
        problems.append(f"max abs prob diff {res['max_abs_diff']:.3g} > {tol:g}")
    if res["top1_agreement_decisive"] < min_agree:
        problems.append(f"top-1 agreement {res['top1_agreement_decisive']:.1%} < {min_agree:.0%}")
    return res, problems


def compare(ref: np.ndarray, out: np.ndarray, tol: float | None) -> dict:
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    if ref.shape != out.shape:
        raise VerificationError(f"output shape {out.shape} differs from the source model's {ref.shape}")
    diff = float(np.abs(ref - out).max()) if ref.size else 0.0
    agree = ref.argmax(1) == out.argmax(1)
    srt = np.sort(ref, axis=1)
    margin = srt[:, -1] - srt[:, -2] if ref.shape[1] > 1 else np.ones(len(ref))
    decisive = margin > 2 * (tol if tol is not None else 1e-2)
    return {
        "n": len(ref),
        "max_abs_diff": diff,
        "mean_abs_diff": float(np.abs(ref - out).mean()) if ref.size else 0.0,
        "top1_agreement": float(agree.mean()) if len(ref) else 1.0,
        "decisive": int(decisive.sum()),
        "top1_agreement_decisive": float(agree[decisive].mean()) if decisive.any() else 1.0,
    }


def verify_artefact(backend, path, source_model, args: dict, preprocess: dict | None, imgsz: int) -> dict:
    """Run the artefact and the source on the same inputs; raise VerificationError beyond tolerance."""
    import torch

    from yolo_export.autobackend import LoadedModel
    from yolo_export.registry import precision_of

    precision = precision_of(args)
    ok, why = backend.runtime_available()
    if not ok:
        return {"status": "skipped", "reason": why, "precision": precision}
    n = 32 if precision == "int8" and args.get("data") else 8
    x = check_inputs(imgsz, n, args.get("data"), preprocess)
    p = next(source_model.parameters())
    with torch.no_grad():
        ref = source_model(torch.from_numpy(x).to(p.device, p.dtype)).float().cpu().numpy()
    t0 = time.perf_counter()
    ab = LoadedModel(path, device=args.get("device") or "cpu", backend=backend, threads=args.get("threads"))
    res, failed = judge(ref, ab.run(x), backend.tolerance, precision, real_images=bool(args.get("data")))
    res.update({"inputs": "data" if args.get("data") else "generated",
                "time_s": round(time.perf_counter() - t0, 3), "threads": ab.threads})
    res["status"] = "failed" if failed else "passed"
    if failed:
        raise VerificationError(
            f"{backend.name} {precision} export disagrees with the source model: {'; '.join(failed)} "
            f"on {res['n']} inputs (nothing was written; --no-verify keeps it anyway)"
        )
    return res
