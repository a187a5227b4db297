"""The model: exact parameter counts, key layout, scales, fuse, GFLOPs."""

import pytest
import torch

from yolo_export import YOLO
from yolo_export.errors import YoloExportError
from yolo_export.nn.model import ClassificationModel

PARAMS = {"n": 2_719_288, "s": 6_361_736, "m": 17_053_336, "l": 37_480_744, "x": 57_422_840}


@pytest.mark.parametrize("scale", list(PARAMS))
def test_param_counts_exact(scale):
    m = ClassificationModel(f"yolov8{scale}-cls.yaml")
    assert m.num_params() == PARAMS[scale]
    assert m.nc == 1000 and m.scale == scale


def test_unified_yaml_with_scale_and_facade():
    a = YOLO("yolov8s-cls.yaml")
    b = YOLO("yolov8-cls.yaml", scale="s")
    assert a.model.num_params() == b.model.num_params() == PARAMS["s"]
    assert b.model.scale == "s"


def test_nc_and_names_settable():
    m = YOLO("yolov8n-cls.yaml", nc=3).model
    assert m.model[-1].linear.out_features == 3 and m.names == {0: "class0", 1: "class1", 2: "class2"}
    m2 = YOLO("yolov8n-cls.yaml", names=["cat", "dog"]).model
    assert m2.nc == 2 and m2.names == {0: "cat", 1: "dog"}
    with pytest.raises(YoloExportError, match="class names"):
        ClassificationModel("yolov8n-cls.yaml", nc=3, names=["a", "b"])


def test_state_dict_key_layout():
    keys = set(ClassificationModel("yolov8n-cls.yaml").state_dict())
    for k in ["model.0.conv.weight", "model.0.bn.running_var", "model.2.cv1.conv.weight", "model.2.m.0.cv1.conv.weight",
              "model.8.m.0.cv2.bn.weight", "model.9.conv.conv.weight", "model.9.linear.weight", "model.9.linear.bias"]:
        assert k in keys, k


def test_unknown_scale_and_missing_yaml():
    with pytest.raises(YoloExportError, match="unknown scale"):
        ClassificationModel("yolov8-cls.yaml", scale="q")
    with pytest.raises(YoloExportError, match="not found"):
        ClassificationModel("nope-cls.yaml")


def test_fuse_keeps_outputs_and_softmax(tiny_yolo):
    import copy

    m = copy.deepcopy(tiny_yolo.model).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
        m.fuse()
        out = m(x)
    assert m.is_fused()
    assert torch.allclose(ref.sum(1), torch.ones(4), atol=1e-5)
    assert (ref - out).abs().max() < 1e-5
    m.train()
    assert m(x).sum(1).sub(1).abs().max() > 1e-3  # logits while training


def test_gflops_scale_with_imgsz():
    m = ClassificationModel("yolov8n-cls.yaml")
    g224, g32 = m.gflops(224), m.gflops(32)
    assert 0.3 < g224 < 0.6
    assert g32 < g224 / 20
