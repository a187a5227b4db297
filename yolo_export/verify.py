"""Numerical parity of an exported artefact against the model it came from.

After every export, the artefact runs (through AutoBackend, exactly as predict runs it) on the same inputs as
the source PyTorch model. We report the max absolute difference of the class probabilities and the top-1
agreement. A random-init model gives near-uniform probabilities whose top-1 is decided by differences smaller
than float rounding, so agreement is judged on *decisive* samples: those whose reference top-1 leads the
runner-up by more than the format's tolerance (all samples, for a trained model). Both figures are stored.
"""

from __future__ import annotations

import time

import numpy as np

from yolo_export.data.samples import calibration_batch, check_inputs, list_split_images  # noqa: F401 - re-exported
from yolo_export.errors import VerificationError


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

    from yolo_export.autobackend import AutoBackend
    from yolo_export.registry import precision_of

    precision = precision_of(args)
    tol, min_agree = backend.tolerance.get(precision, (None, 0.9))
    ok, why = backend.runtime_available()
    if not ok:
        return {"status": "skipped", "reason": why, "precision": precision}
    n = 32 if precision == "int8" and args.get("data") else 8
    x = check_inputs(imgsz, n, args.get("data"), preprocess)
    p = next(source_model.parameters())
    with torch.no_grad():
        ref = source_model(torch.from_numpy(x).to(p.device, p.dtype)).float().cpu().numpy()
    t0 = time.perf_counter()
    ab = AutoBackend(path, device=args.get("device") or "cpu", backend=backend, threads=args.get("threads"))
    out = ab.run(x)
    res = compare(ref, out, tol)
    res.update({"precision": precision, "tolerance": tol, "min_agreement": min_agree,
                "inputs": "data" if args.get("data") else "generated",
                "time_s": round(time.perf_counter() - t0, 3), "threads": ab.threads})
    failed = []
    if tol is not None and res["max_abs_diff"] > tol:
        failed.append(f"max abs prob diff {res['max_abs_diff']:.3g} > {tol:g}")
    if res["top1_agreement_decisive"] < min_agree:
        failed.append(f"top-1 agreement {res['top1_agreement_decisive']:.1%} < {min_agree:.0%}")
    res["status"] = "failed" if failed else "passed"
    if failed:
        raise VerificationError(
            f"{backend.name} {precision} export disagrees with the source model: {'; '.join(failed)} "
            f"on {res['n']} inputs (nothing was written; --no-verify keeps it anyway)"
        )
    return res
