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
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = build_from_checkpoint(load_checkpoint(tmp_path / "h.pt"))(x)
        b = tiny_yolo.model.eval()(x)
    # fp16 weights move the probabilities of this deliberately confident test model by up to ~2e-2 near ties
    assert (a - b).abs().max() < 5e-2


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


def _conditioned(eps=None, momentum=None):
    import copy

    from backend_models import condition

    from yolo_export.nn.model import ClassificationModel

    torch.manual_seed(3)
    m = ClassificationModel("yolov8n-cls.yaml", names=[f"k{i}" for i in range(5)])
    m.set_attrs(**{k: v for k, v in (("bn_eps", eps), ("bn_momentum", momentum)) if v is not None})
    condition(m, 32)
    m.imgsz = 32
    return copy.deepcopy(m).eval()


def _logits(model, x):
    out = {}
    h = model.model[-1].linear.register_forward_hook(lambda mod, i, o: out.__setitem__("y", o))
    with torch.no_grad():
        model(x)
    h.remove()
    return out["y"]


def test_reference_bn_values_are_taken_from_the_file(tmp_path):
    """The fake carries the reference classification model's BatchNorm (eps 1e-5, momentum 0.1) and, in a second
    file, a non-default pair: both are imported as they are, never replaced by a default."""
    x = torch.rand(4, 3, 32, 32)
    for eps, mom in ((None, None), (1e-3, 0.03)):
        src = _conditioned(eps, mom)
        p = tmp_path / f"ref_{eps}.pt"
        make_ultralytics_checkpoint(p, src, imgsz=32)
        ck = load_checkpoint(p)
        want = {"bn_eps": eps or 1e-5, "bn_momentum": mom or 0.1, "act": "SiLU", "dropout": 0.0}
        assert ck["yaml"]["module_attrs"] == want
        model = build_from_checkpoint(ck)
        assert {(b.eps, b.momentum) for b in model.modules() if isinstance(b, torch.nn.BatchNorm2d)} == \
            {(want["bn_eps"], want["bn_momentum"])}
        ref = src.half().float()  # the file holds fp16 weights
        assert (_logits(model, x) - _logits(ref, x)).abs().max() < 1e-5
        # converted to ours, the attributes are recorded and survive the round trip
        out = save_ultralytics_as_ours(p, tmp_path / f"ours_{eps}.pt")
        assert torch.load(out, weights_only=True)["yaml"]["module_attrs"] == want


def test_reference_attributes_it_cannot_reproduce_are_refused(tmp_path, tiny_yolo):
    from torch import nn

    cases = {
        "activation ReLU": dict(act=nn.ReLU()),
        "different bn settings": dict(edit=lambda m: setattr(m.model[0].bn, "eps", 1e-2)),
        r"model\.1\.conv\.stride": dict(edit=lambda m: setattr(m.model[1].conv, "stride", (1, 1))),
        r"model\.9\.pool": dict(edit=lambda m: setattr(m.model[9], "pool", nn.AdaptiveMaxPool2d(1))),
        r"model\.2\.m\.0\.add": dict(edit=lambda m: setattr(m.model[2].m[0], "add", False)),
        r"model\.9\.pool\.output_size": dict(edit=lambda m: setattr(m.model[9].pool, "output_size", 2)),
    }
    for i, (match, kw) in enumerate(cases.items()):
        p = tmp_path / f"bad{i}.pt"
        make_ultralytics_checkpoint(p, tiny_yolo.model, imgsz=32, **kw)
        with pytest.raises(CheckpointError, match=match) as ei:
            load_checkpoint(p)
        assert "\n" not in str(ei.value)


def test_pretrained_carries_the_file_attributes_into_training(tmp_path):
    from yolo_export.engine.trainer import Trainer
    from yolo_export.nn.model import ClassificationModel

    p = tmp_path / "ref.pt"
    make_ultralytics_checkpoint(p, _conditioned(2e-4, 0.2), imgsz=32)
    fresh = ClassificationModel("yolov8n-cls.yaml", nc=5)
    t = Trainer(YOLO("yolov8n-cls.yaml"), pretrained=str(p))
    assert t._transfer(fresh, str(p)) == len(fresh.state_dict())
    assert fresh.attrs["bn_eps"] == 2e-4 and fresh.attrs["bn_momentum"] == 0.2
    assert {(b.eps, b.momentum) for b in fresh.modules() if isinstance(b, torch.nn.BatchNorm2d)} == {(2e-4, 0.2)}
