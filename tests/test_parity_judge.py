"""The one parity judge (verify.judge), used by the export-time check and the benchmark matrix alike."""

import numpy as np

from yolo_export.verify import FLOOR_MIN_SAMPLES, INT8_FLOOR, judge

TOL = {"fp32": (1e-4, 1.0), "fp16": (1e-2, 0.99), "int8": (None, 0.5)}


def _probs(n, nc=10, seed=0, margin=0.5):
    """n confident rows (top-1 leads by ~margin): every row is decisive."""
    rng = np.random.default_rng(seed)
    p = rng.random((n, nc)) * (1 - margin) / nc
    p[np.arange(n), rng.integers(0, nc, n)] += margin
    return p / p.sum(1, keepdims=True)


def _flip(p, k):
    """The same rows with the top-1 of the first k moved to another class."""
    out = p.copy()
    for i in range(k):
        j = int(out[i].argmax())
        out[i, j], out[i, (j + 1) % out.shape[1]] = out[i, (j + 1) % out.shape[1]], out[i, j]
    return out


def test_fp32_bounds():
    ref = _probs(8)
    res, problems = judge(ref, ref + 5e-5, TOL, "fp32", real_images=False)
    assert problems == [] and res["tolerance"] == 1e-4 and res["min_agreement"] == 1.0
    _, problems = judge(ref, ref + 2e-4, TOL, "fp32", real_images=False)
    assert problems == ["max abs prob diff 0.0002 > 0.0001"]
    _, problems = judge(ref, _flip(ref, 1), TOL, "fp32", real_images=False)
    assert any(p.startswith("max abs prob diff") for p in problems) and "top-1 agreement 87.5% < 100%" in problems


def test_near_ties_do_not_decide():
    ref = np.full((4, 10), 0.1)
    ref[:, 3] += 1e-6  # a random-init model: top-1 decided below float rounding
    out = ref.copy()
    out[:, 5] += 2e-6
    res, problems = judge(ref, out, TOL, "fp32", real_images=False)
    assert res["decisive"] == 0 and res["top1_agreement"] == 0.0 and problems == []


def test_int8_floor_on_many_real_images_only():
    n = FLOOR_MIN_SAMPLES + 100
    ref = _probs(n)
    k = int(n * (1 - INT8_FLOOR)) + 2  # agreement just under the floor, far above the declared 0.5
    res, problems = judge(ref, _flip(ref, k), TOL, "int8", real_images=True)
    assert res["min_agreement"] == INT8_FLOOR and problems and problems[0].startswith("top-1 agreement")
    res, problems = judge(ref, _flip(ref, k), TOL, "int8", real_images=False)  # generated inputs: sanity floor only
    assert res["min_agreement"] == 0.5 and problems == []
    few = _probs(32)
    res, problems = judge(few, _flip(few, 2), TOL, "int8", real_images=True)  # the export check's 32 images
    assert res["min_agreement"] == 0.5 and problems == []
    _, problems = judge(few, _flip(few, 20), TOL, "int8", real_images=True)  # a broken conversion still fails
    assert problems == ["top-1 agreement 37.5% < 50%"]
