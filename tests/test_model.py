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
    # folding BatchNorm (eps 1e-5) into the conv rounds differently in fp32: up to 3e-5 on these confident
    # probabilities over 20 random batches
    assert (ref - out).abs().max() < 1e-4
    m.train()
    assert m(x).sum(1).sub(1).abs().max() > 1e-3  # logits while training


def test_gflops_scale_with_imgsz():
    m = ClassificationModel("yolov8n-cls.yaml")
    g224, g32 = m.gflops(224), m.gflops(32)
    assert 0.3 < g224 < 0.6
    assert g32 < g224 / 20


def test_batchnorm_defaults_are_the_reference_classification_models():
    m = ClassificationModel("yolov8n-cls.yaml", nc=3)
    bns = [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]
    assert bns and {(b.eps, b.momentum) for b in bns} == {(1e-5, 0.1)}
    assert m.attrs == {"bn_eps": 1e-5, "bn_momentum": 0.1, "act": "SiLU", "dropout": 0.0}
    assert type(m.model[0].act).__name__ == "SiLU" and m.model[-1].drop.p == 0.0
    assert tuple(m.model[-1].pool.output_size if isinstance(m.model[-1].pool.output_size, tuple)
                 else (m.model[-1].pool.output_size,)) == (1,)


def test_module_attrs_recorded_and_restored(tmp_path):
    from yolo_export.nn.checkpoint import FORMAT_VERSION, build_from_checkpoint, load_checkpoint, save_checkpoint

    m = ClassificationModel("yolov8n-cls.yaml", nc=3, dropout=0.25)
    m.set_attrs(bn_eps=2e-4, bn_momentum=0.05)
    save_checkpoint(tmp_path / "a.pt", m, half=False)
    raw = torch.load(tmp_path / "a.pt", weights_only=True)
    assert raw["format_version"] == FORMAT_VERSION >= 2
    assert raw["yaml"]["module_attrs"] == {"bn_eps": 2e-4, "bn_momentum": 0.05, "act": "SiLU", "dropout": 0.25}
    back = build_from_checkpoint(load_checkpoint(tmp_path / "a.pt"))
    assert {(b.eps, b.momentum) for b in back.modules() if isinstance(b, torch.nn.BatchNorm2d)} == {(2e-4, 0.05)}
    assert back.model[-1].drop.p == 0.25


@pytest.mark.parametrize("bad, match", [({"bn_eps": 0}, "eps"), ({"bn_momentum": 2}, "momentum"),
                                        ({"act": "ReLU"}, "activation 'ReLU'"), ({"dropout": 1.5}, "dropout"),
                                        ({"pool": "max"}, "unknown module attribute")])
def test_unreproducible_module_attrs_are_refused(bad, match):
    with pytest.raises(YoloExportError, match=match):
        ClassificationModel({**ClassificationModel("yolov8n-cls.yaml").yaml, "module_attrs": bad})


def test_earlier_schema_checkpoint_predicts_bit_for_bit_as_before(tmp_path):
    """A format-version-1 file (no recorded attributes; written when BatchNorm was built with eps 1e-3 / momentum
    0.03) is written here exactly as that version wrote it, and still gives the very same outputs."""
    import io

    from yolo_export.nn.checkpoint import build_from_checkpoint, load_checkpoint

    from backend_models import condition

    torch.manual_seed(0)
    m = ClassificationModel("yolov8n-cls.yaml", nc=4)
    for b in m.modules():
        if isinstance(b, torch.nn.BatchNorm2d):  # what version 1 built
            b.eps, b.momentum = 1e-3, 0.03
    condition(m, 32)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = m(x)
    yaml_v1 = {k: v for k, v in m.yaml.items() if k != "module_attrs"}
    ck = {"format": "yolo-export/checkpoint", "format_version": 1, "version": "0.1.0", "date": "2026-11-01T00:00:00",
          "task": "classify", "yaml": yaml_v1, "names": {i: f"n{i}" for i in range(4)}, "imgsz": 32,
          "preprocess": None, "state_dict": {k: v.clone() for k, v in m.state_dict().items()}, "fused": False}
    buf = io.BytesIO()
    torch.save(ck, buf)
    (tmp_path / "v1.pt").write_bytes(buf.getvalue())
    back = build_from_checkpoint(load_checkpoint(tmp_path / "v1.pt"))
    assert back.attrs["bn_eps"] == 1e-3 and back.attrs["bn_momentum"] == 0.03
    with torch.no_grad():
        got = back(x)
        back.set_attrs(bn_eps=1e-5)  # the attribute matters: with today's default the outputs move
        moved = back(x)
    assert torch.equal(got, expected)
    assert (moved - expected).abs().max() > 1e-6
    # a conversion of a reference-package file by that earlier version loads the same way, with a warning
    import logging

    from yolo_export.utils import LOGGER

    seen = []
    h = logging.Handler()
    h.emit = lambda r: seen.append(r.getMessage())
    LOGGER.addHandler(h)
    try:
        back = build_from_checkpoint({**load_checkpoint(tmp_path / "v1.pt"), "source": "ultralytics"})
    finally:
        LOGGER.removeHandler(h)
    assert back.attrs["bn_eps"] == 1e-3 and any("convert the original file again" in m for m in seen)


def test_architecture_budgets_admit_real_models_and_name_the_override(monkeypatch):
    with torch.device("meta"):
        assert ClassificationModel("yolov8x-cls.yaml", nc=22000).nc == 22000  # a 22k-class head is admitted
    for cfg, match in [({"nc": 300000}, r"nc is 300,000 classes.*YOLO_EXPORT_MAX_NC"),
                       ({"scales": {"n": [0.33, 64, 1024]}}, r"width multiple is 64 times.*YOLO_EXPORT_MAX_WIDTH"),
                       ({"scales": {"n": [40, 0.25, 1024]}}, r"depth multiple is 40 times.*YOLO_EXPORT_MAX_DEPTH"),
                       ({"backbone": [[-1, 1, "Conv", [10**6, 3, 2]]]}, r"row 0 channels is 1,000,000 .*_MAX_CHANNELS"),
                       ({"backbone": [[-1, 10**6, "C2f", [64, True]]]}, r"row 0 repeats is 1,000,000 .*_MAX_REPEATS"),
                       ({"backbone": "x"}, "'backbone' and 'head' lists")]:
        base = ClassificationModel("yolov8n-cls.yaml").yaml
        with pytest.raises(YoloExportError, match=match) as ei:
            ClassificationModel({**base, **cfg})
        assert "\n" not in str(ei.value)
    monkeypatch.setenv("YOLO_EXPORT_MAX_NC", "400000")
    with torch.device("meta"):
        assert ClassificationModel("yolov8n-cls.yaml", nc=300000).nc == 300000
    monkeypatch.setenv("YOLO_EXPORT_MAX_PARAMS", "1000000")
    with pytest.raises(YoloExportError, match=r"model size is 2,719,288 parameters, over the limit of 1,000,000 "
                                                r"\(set YOLO_EXPORT_MAX_PARAMS"):
        ClassificationModel("yolov8n-cls.yaml")


def test_facade_names_its_format_backend_and_loaded_model(tiny_pt, tmp_path):
    """One name per thing: ``format_backend`` (registry.Backend), ``loaded_model()`` (LoadedModel, alias backend())."""
    import numpy as np

    from yolo_export import registry
    from yolo_export.autobackend import AutoBackend, LoadedModel

    y = YOLO(tiny_pt)
    src = registry.source_backend()
    assert y.format_backend is src and y.format == src.name and src.is_source
    assert sum(b.is_source for b in registry.all_backends()) == 1
    lm = y.loaded_model()
    assert isinstance(lm, LoadedModel) and AutoBackend is LoadedModel and y.backend() is lm  # cached, old name works
    assert lm.backend is src and lm.runner.any_imgsz and lm.dynamic_imgsz
    x = np.random.default_rng(0).random((2, 3, 48, 48), dtype=np.float32)   # a live module takes any size
    assert lm.run(x).shape == (2, len(y.names))

    out = y.export("onnx", imgsz=32, verify=False, output=str(tmp_path / "m.onnx"))
    art = YOLO(out)
    assert art.format_backend is registry.get("onnx") and art.format == art.format_backend.name
    ort = art.loaded_model()
    assert ort.backend is art.format_backend and not ort.dynamic_imgsz   # an export takes its own size only
    with pytest.raises(YoloExportError, match="takes 32x32 inputs"):
        ort.run(x)


def test_adopt_swaps_the_model_and_forgets_the_loaded_one(tiny_yolo, tiny_pt):
    from yolo_export.nn.checkpoint import build_from_checkpoint, load_checkpoint

    y = YOLO("yolov8n-cls.yaml", nc=3)
    first = y.loaded_model()
    ck = load_checkpoint(tiny_pt)
    assert y.adopt(build_from_checkpoint(ck), ck, tiny_pt) is y
    assert y.ckpt_path == str(tiny_pt) and y.model_name == "tiny" and y.ckpt is ck
    lm = y.loaded_model()
    assert lm is not first and lm.names == tiny_yolo.names
    with pytest.raises(AttributeError, match="adopt"):
        y.format = "onnx"


def test_checkpoint_build_skips_random_init_and_shares_nothing(tmp_path):
    """The model is materialised from the checked meta-device build and filled from the state dict (no random init
    to throw away): same outputs, its own memory, and a real build whenever the state dict would not cover it."""
    from yolo_export.nn.checkpoint import _materialise, build_from_checkpoint, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    m = ClassificationModel("yolov8n-cls.yaml", nc=3).eval()
    save_checkpoint(tmp_path / "a.pt", m, half=False)
    ck = load_checkpoint(tmp_path / "a.pt")
    back = build_from_checkpoint(ck)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(back(x), m(x))
    assert not any(t.is_meta for t in [*back.state_dict().values(), back.stride])
    w = back.model[0].conv.weight
    assert w.data_ptr() != ck["state_dict"]["model.0.conv.weight"].data_ptr()
    with torch.device("meta"):
        meta = ClassificationModel("yolov8n-cls.yaml", nc=3)
        meta.model[0].register_buffer("scratch", torch.zeros(1), persistent=False)
    assert _materialise(meta, ck["state_dict"]) is None
