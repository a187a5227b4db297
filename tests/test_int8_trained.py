"""INT8 on a really trained model: every INT8 format, calibrated on digits, agrees with the .pt on the val split."""

import numpy as np
import pytest

from conftest import has
from yolo_export import YOLO

CASES = [
    ("onnx", ("onnxruntime",)),
    ("openvino", ("openvino", "nncf")),
    ("tflite", ("tensorflow", "onnx2tf", "ai_edge_litert")),
]


@pytest.fixture(scope="module")
def val_batch():
    from yolo_export.data.datasets import resolve_dataset, scan_split
    from yolo_export.data.transforms import default_preprocess, preprocess

    samples, _ = scan_split(resolve_dataset("digits"), "val")
    pp = default_preprocess(32)
    return np.stack([preprocess(p, pp) for p, _ in samples]), np.array([c for _, c in samples])


@pytest.mark.parametrize("fmt,mods", CASES, ids=[c[0] for c in CASES])
def test_int8_agrees_with_pt_on_digits_val(fmt, mods, trained_pt, val_batch, tmp_path):
    if not has(*mods):
        pytest.skip(f"{fmt} INT8 needs {', '.join(mods)}")
    import shutil

    pt = tmp_path / "best.pt"
    shutil.copy(trained_pt, pt)
    src = YOLO(pt)
    path = src.export(fmt, int8=True, data="digits", calib_images=128)
    assert src.last_export.parity["status"] == "passed"
    x, y = val_batch
    ref = np.concatenate([src.backend().run(x[i:i + 64]) for i in range(0, len(x), 64)])
    q = YOLO(path).backend()
    out = np.concatenate([q.run(x[i:i + 64]) for i in range(0, len(x), 64)])
    agree = float((out.argmax(1) == ref.argmax(1)).mean())
    assert (ref.argmax(1) == y).mean() > 0.9  # the model is really trained
    assert agree >= 0.98, f"{fmt} INT8 top-1 agreement with the .pt on {len(x)} val images: {agree:.2%}"
