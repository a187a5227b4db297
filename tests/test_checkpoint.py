"""Checkpoints: our plain-dict format loads with weights_only=True; Ultralytics-format files import without that
package through a restricted unpickler; anything else is refused before it runs."""

import os
import sys

import numpy as np
import pytest
import torch
from ultralytics_fake import make_ultralytics_checkpoint

from yolo_export import YOLO
from yolo_export.errors import CheckpointError
from yolo_export.nn.checkpoint import build_from_checkpoint, load_checkpoint, save_ultralytics_as_ours


def test_our_checkpoint_is_plain_data(tiny_pt):
    ck = torch.load(tiny_pt, map_location="cpu", weights_only=True)
    assert ck["format"] == "yolo-export/checkpoint" and ck["names"][3] == "c3" and ck["imgsz"] == 32
    assert all(isinstance(v, torch.Tensor) for v in ck["state_dict"].values())


def test_half_checkpoint_is_smaller_and_close(tiny_yolo, tmp_path):
    from yolo_export.nn.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "h.pt", tiny_yolo.model, half=True)
    save_checkpoint(tmp_path / "f.pt", tiny_yolo.model, half=False)
    assert (tmp_path / "h.pt").stat().st_size < 0.6 * (tmp_path / "f.pt").stat().st_size
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a = build_from_checkpoint(load_checkpoint(tmp_path / "h.pt"))(x)
        b = tiny_yolo.model.eval()(x)
    assert (a - b).abs().max() < 2e-2


def test_ultralytics_checkpoint_imports_without_the_package(tiny_yolo, tmp_path):
    p = tmp_path / "ul.pt"
    make_ultralytics_checkpoint(p, tiny_yolo.model, imgsz=32, resize=36)
    assert "ultralytics" not in sys.modules and "torchvision" not in sys.modules
    with pytest.raises(Exception):  # the plain safe loader refuses it...
        torch.load(p, map_location="cpu", weights_only=True)
    ck = load_checkpoint(p)  # ...and the restricted importer reads it
    assert ck["source"] == "ultralytics" and ck["names"] == tiny_yolo.model.names
    assert ck["preprocess"]["resize"] == 36 and ck["preprocess"]["crop"] == 32
    assert ck["train_args"]["optimizer"] == "SGD"
    model = build_from_checkpoint(ck)
    import copy

    ref = copy.deepcopy(tiny_yolo.model).eval().half().float()  # the file holds fp16 weights
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() < 1e-5
    # the facade, export and conversion to our format
    y = YOLO(p)
    assert y.preprocess["resize"] == 36
    out = save_ultralytics_as_ours(p, tmp_path / "ours.pt")
    torch.load(out, map_location="cpu", weights_only=True)
    a = y(np.full((40, 50, 3), 128, np.uint8))[0].probs.data
    b = YOLO(out)(np.full((40, 50, 3), 128, np.uint8))[0].probs.data
    assert np.abs(a - b).max() < 1e-6


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"model": _Evil(marker), "train_args": {}}, p)
    with pytest.raises(CheckpointError, match=r"refused.*(posix|os)\.system"):
        load_checkpoint(p)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        YOLO(p)
    assert not marker.exists()


def test_foreign_and_corrupt_files(tmp_path, tiny_pt):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(junk)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(tiny_pt.read_bytes()[: tiny_pt.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(trunc)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a YOLOv8-cls checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
