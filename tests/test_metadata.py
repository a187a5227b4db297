"""One metadata schema: Python-literal values where other YOLO runtimes expect them, JSON for ours, no eval."""

import ast

import pytest

from yolo_export import metadata as md


def sample():
    return {"description": "x", "author": "yolo-export", "date": "2026-11-27T00:00:00", "version": "0.1.0",
            "license": "AGPL-3.0 License", "stride": 1, "task": "classify", "batch": 1, "imgsz": [32, 32],
            "names": {0: "cat", 1: "dog's"}, "args": {"batch": 1, "dynamic": False, "half": None},
            "channels": 3, "preprocess": {"resize": 32, "crop": 32, "layout": "NCHW", "mean": [0, 0, 0]},
            "verification": {"max_abs_diff": 1e-7, "status": "passed", "ok": True}}


def test_literal_values_parse_as_python_literals():
    enc = md.encode(sample())
    assert all(isinstance(v, str) for v in enc.values())
    assert ast.literal_eval(enc["names"]) == {0: "cat", 1: "dog's"}
    assert ast.literal_eval(enc["imgsz"]) == [32, 32]
    args = ast.literal_eval(enc["args"])  # JSON's true/false/null would break other runtimes
    assert args == {"batch": 1, "dynamic": False, "half": None}
    assert "false" not in enc["args"] and "null" not in enc["args"]


def test_round_trip():
    s = sample()
    assert md.decode(md.encode(s)) == s


def test_reads_foreign_json_and_refuses_code():
    raw = {"names": '{"0": "a", "1": "b"}', "imgsz": "224", "stride": "32",
           "args": "__import__('os').system('echo pwned')", "batch": "1"}
    d = md.decode(raw)
    assert d["names"] == {0: "a", 1: "b"}
    assert d["imgsz"] == [224, 224] and d["stride"] == 32 and d["batch"] == 1
    assert d["args"] == raw["args"]  # left as text, never evaluated


def test_yaml_text_round_trip():
    s = sample()
    assert md.from_yaml_text(md.to_yaml_text(s)) == s


def test_one_encoder_for_every_carrier_and_the_cli():
    """``metadata.plain``: NumPy values become numbers and lists, results their dict, keys stay scalars, the rest
    its str; JSON (TorchScript, TensorRT header, CLI) and Python-literal text (ONNX...) both go through it."""
    import json
    from dataclasses import dataclass
    from pathlib import Path

    import numpy as np

    from yolo_export.metadata import encode, plain, to_json

    @dataclass
    class R:
        top1: float

        def to_dict(self):
            return {"top1": self.top1}

    v = {np.int64(3): np.float32(0.5), "a": (1, np.arange(2)), "r": R(0.25), "p": Path("x/y"), (1, 2): None,
         "b": np.bool_(True)}
    assert plain(v) == {3: 0.5, "a": [1, [0, 1]], "r": {"top1": 0.25}, "p": "x/y", "(1, 2)": None, "b": True}
    assert json.loads(to_json(v)) == {"3": 0.5, "a": [1, [0, 1]], "r": {"top1": 0.25}, "p": "x/y", "(1, 2)": None,
                                      "b": True}
    assert encode({"names": {np.int64(0): "cat"}, "imgsz": (np.int32(32), 32)}) == {"names": "{0: 'cat'}",
                                                                                 "imgsz": "[32, 32]"}


def _onnx_with(tmp_path, **props):
    import json

    from hostile import files as F

    base = F.good_props()
    pp = json.loads(base["preprocess"])
    over = {k: (json.dumps({**pp, **v}) if k == "preprocess" else v) for k, v in props.items()}
    path = tmp_path / "m.onnx"
    F.tiny_onnx(path, {**base, **over})
    return path


@pytest.mark.parametrize("args", ["[1, 2]", "'half'", "__import__('os').system('true')"])
def test_args_that_are_not_a_map_are_ignored_at_run_time(tmp_path, args):
    """Another tool's ``args`` that is no map (a list, a string) is kept as read and never used as one."""
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from yolo_export import YOLO

    img = tmp_path / "a.png"
    Image.new("RGB", (40, 40), (10, 200, 30)).save(img)
    r = YOLO(_onnx_with(tmp_path, args=args))(img)[0]
    assert 0 <= r.probs.top1 < 3


@pytest.mark.parametrize("key,value", [("std", [0, 0, 0]), ("std", [1, float("nan"), 1]),
                                       ("mean", [float("inf"), 0, 0]), ("value_range", [0, float("nan")])])
def test_preprocess_numbers_that_break_the_input_are_refused(key, value):
    """A zero or non-finite std/mean/value_range would turn every input into NaN or inf; refused on reading."""
    from yolo_export.errors import MetadataError

    pp = {"resize": 32, "crop": 32, "mean": [0, 0, 0], "std": [1, 1, 1], key: value}
    with pytest.raises(MetadataError, match=f"preprocess.{key}"):
        md.decode({"names": "{0: 'a'}", "preprocess": md.encode({"preprocess": pp})["preprocess"]})
