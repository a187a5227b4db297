"""Property-based tests of every reader of untrusted bytes: whatever the input, only the project's own error classes
escape (one clear line at the CLI), nothing grows past its budget, and what we write reads back unchanged.

Readers: the checkpoint loader, the metadata decoders (string map, metadata.yaml, JSON documents), the TensorRT
header, the ExecuTorch ``.pte`` trailer, the TFLite appended-archive reader and the TorchScript zip reader.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yolo_export import limits, metadata
from yolo_export.errors import YoloExportError

SETTINGS = settings(max_examples=100, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

NAMES = {0: "cat", 1: "dog", 2: "crème brûlée"}


def _meta(**kw):
    m = {"description": "x", "task": "classify", "batch": 1, "imgsz": [32, 32], "names": dict(NAMES),
         "args": {"half": False, "dynamic": True, "opset": None}, "stride": 1, "channels": 3,
         "preprocess": {"resize": 36, "crop": 32, "interpolation": "bilinear", "mean": [0.0, 0.0, 0.0],
                        "std": [1.0, 1.0, 1.0], "layout": "NCHW"}}
    m.update(kw)
    return m


# A mix of well-formed and hostile values for each metadata key.
_values = st.one_of(
    st.text(max_size=64),
    st.sampled_from(["{0: 'a'}", "[224, 224]", "224", "[[[[[[", "{'a': " * 40, "1e400", "-1", "0", "[0, 0]",
                     '{"resize": 100000, "crop": 1}', '{"resize": 224, "crop": 224}', "9" * 5000, "(1,)*9",
                     "__import__('os')", "{1: 2, 3: [4, {5: 6}]}", "[1.5, 2]", "True", "None", "{...}"]),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4),
                 max_leaves=20).map(json.dumps),
)


@SETTINGS
@given(st.dictionaries(st.sampled_from(list(metadata.KEYS) + ["format", "x"]), _values, max_size=8))
def test_decode_only_our_errors(raw):
    try:
        out = metadata.decode(raw, "m.onnx")
    except YoloExportError as e:
        assert "\n" not in str(e)
        return
    if isinstance(out.get("preprocess"), dict):
        for k in ("resize", "crop"):
            v = out["preprocess"].get(k)
            assert v is None or 1 <= v <= limits.IMGSZ.limit
    for v in out.get("imgsz") or []:
        assert 1 <= v <= limits.IMGSZ.limit


_NAME = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12)  # YAML folds line breaks


@SETTINGS
@given(st.dictionaries(st.integers(0, 30000), _NAME, min_size=1, max_size=40),
       st.integers(1, 4096), st.integers(1, 4096), st.integers(1, 64))
def test_encode_decode_round_trip(names, resize, crop, batch):
    meta = _meta(names=names, batch=batch, preprocess={"resize": resize, "crop": crop, "mean": [0.5, 0.5, 0.5],
                                                       "std": [0.25, 0.25, 0.25]})
    back = metadata.decode(metadata.encode(meta))
    assert back["names"] == names and back["batch"] == batch and back["preprocess"] == meta["preprocess"]
    yback = metadata.from_yaml_text(metadata.to_yaml_text(meta))
    assert yback["names"] == names and yback["preprocess"] == meta["preprocess"]


@SETTINGS
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400),
                 st.lists(st.sampled_from(["a: &a [1, 2]\n", "b: *a\n", "- [", "]", "{", "}", ": ",
                                           "!!python/name:os.system ", "&x ", "*x ", "\n  - ", "names: {0: a}\n",
                                           "? ", "'", '"', "%YAML 1.1\n",
                                           "!!binary ", "<<: *a\n", "---\n"]),
                          max_size=40).map("".join)))
def test_yaml_only_our_errors(text):
    try:
        metadata.from_yaml_text(text, "metadata.yaml")
    except YoloExportError as e:
        assert "\n" not in str(e)


@SETTINGS
@given(st.integers(2, 12), st.integers(2, 12))
def test_yaml_alias_expansion_is_counted_not_built(width, levels):
    lines = ["names: {0: a}", "l0: &l0 [" + ", ".join(["x"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    expanded = sum(width ** i for i in range(levels + 2))      # every node once per path to it
    try:
        metadata.from_yaml_text("\n".join(lines))
        assert expanded <= limits.NODES.limit * 2
    except YoloExportError as e:
        assert "YOLO_EXPORT_MAX_NODES" in str(e) or "YOLO_EXPORT_MAX_NESTING" in str(e)
        assert expanded > limits.NODES.limit // 2


@SETTINGS
@given(st.recursive(st.integers() | st.text(max_size=5, alphabet="ab\"'[]{}()\\"),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
                    max_leaves=40))
def test_text_depth_matches_the_parsed_depth(obj):
    text = json.dumps(obj)
    assert limits.text_depth(text) == limits.obj_depth(obj)
    assert limits.loads_json(text) == obj


@SETTINGS
@given(st.binary(max_size=2048), st.integers(0, 2 ** 32 - 1))
def test_tensorrt_header_reader(tmp_path_factory, body, declared):
    from yolo_export.backends.tensorrt import HEADER_LEN, read_header

    p = tmp_path_factory.mktemp("trt") / "x.engine"
    p.write_bytes(HEADER_LEN.pack(declared) + body)
    try:
        meta, offset = read_header(p)
    except YoloExportError:
        return
    assert isinstance(meta, dict) and 0 <= offset <= p.stat().st_size


@SETTINGS
@given(st.dictionaries(st.integers(0, 999), st.text(max_size=10), min_size=1, max_size=20))
def test_tensorrt_header_round_trip(tmp_path_factory, names):
    from yolo_export.backends.tensorrt import read_header, write_engine

    p = tmp_path_factory.mktemp("trt") / "x.engine"
    write_engine(p, _meta(names=names), b"ENGINE")
    meta, offset = read_header(p)
    assert metadata.decode(meta)["names"] == names and p.read_bytes()[offset:] == b"ENGINE"


def _dict_or_our_error(read, path) -> None:
    """``read(path)`` gives a dict or raises one of the project's errors, never anything else."""
    try:
        out = read(path)
    except YoloExportError:
        return
    assert isinstance(out, dict)


def _pte_backend():
    from yolo_export import registry

    return registry.get("executorch")


@SETTINGS
@given(st.binary(max_size=1024), st.integers(0, 2 ** 64 - 1), st.booleans())
def test_pte_trailer_reader(tmp_path_factory, blob, declared, honest):
    from yolo_export.backends.executorch import _TAIL, MAGIC

    p = tmp_path_factory.mktemp("pte") / "x.pte"
    p.write_bytes(b"\0" * 64 + blob + _TAIL.pack(len(blob) if honest else declared) + MAGIC)
    _dict_or_our_error(_pte_backend().read_metadata, p)


@SETTINGS
@given(st.dictionaries(st.integers(0, 999), st.text(max_size=10), min_size=1, max_size=20))
def test_pte_trailer_round_trip(tmp_path_factory, names):
    from yolo_export.backends.executorch import _trailer

    p = tmp_path_factory.mktemp("pte") / "x.pte"
    p.write_bytes(b"\0\0\0\0ET12PROGRAM" + _trailer(_meta(names=names)))   # the identifier at bytes 4-8
    assert _pte_backend().read_metadata(p)["names"] == names


def _tflite_bytes(meta_text: bytes, body: bytes = b"\0" * 4 + b"TFL3" + b"\0" * 248) -> bytes:
    buf = io.BytesIO()
    buf.write(body)
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("metadata.json", meta_text)
    return buf.getvalue()


@SETTINGS
@given(st.binary(max_size=300), st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), max_size=8),
       st.integers(0, 400))
def test_tflite_metadata_reader(tmp_path_factory, meta_text, flips, cut):
    from yolo_export.backends.tensorflow import tflite_read

    data = bytearray(_tflite_bytes(meta_text))
    for pos, val in flips:
        data[pos % len(data)] = val
    if cut:
        data = data[: max(1, len(data) - cut)]
    p = tmp_path_factory.mktemp("tfl") / "x.tflite"
    p.write_bytes(bytes(data))
    _dict_or_our_error(tflite_read, p)


@SETTINGS
@given(st.dictionaries(st.integers(0, 999), st.text(max_size=10), min_size=1, max_size=20))
def test_tflite_metadata_round_trip(tmp_path_factory, names):
    from yolo_export.backends.tensorflow import tflite_embed, tflite_read

    p = tmp_path_factory.mktemp("tfl") / "x.tflite"
    p.write_bytes(b"\0" * 4 + b"TFL3" + b"\0" * 100)   # a FlatBuffer's file identifier sits at bytes 4-8
    tflite_embed(p, _meta(names=names))
    assert tflite_read(p)["names"] == names
    assert p.read_bytes().startswith(b"\0" * 4 + b"TFL3" + b"\0" * 100)


@SETTINGS
@given(st.binary(min_size=0, max_size=64), st.integers(0, 2 ** 32 - 1))
def test_zip_member_declared_size_is_checked_first(tmp_path_factory, text, declared):
    """A central directory that declares any size: refused over the budget before reading, bounded otherwise."""
    p = tmp_path_factory.mktemp("zip") / "x.zip"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as z:
        z.writestr("extra/config.txt", text)
    data = bytearray(p.read_bytes())
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<L", data, cd + 24, declared)           # the central directory's uncompressed size
    p.write_bytes(bytes(data))
    try:
        blob = limits.zip_member(p, lambda n: n.endswith("config.txt"), "config")
    except YoloExportError as e:
        if declared > limits.METADATA_BYTES.limit:
            assert "declared size" in str(e)
        return
    assert blob is not None and len(blob) <= limits.METADATA_BYTES.limit


# ------------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    from yolo_export.nn.checkpoint import save_checkpoint
    from yolo_export.nn.model import ClassificationModel

    model = ClassificationModel("yolov8n-cls.yaml", nc=3)
    model.names = dict(NAMES)
    p = save_checkpoint(tmp_path_factory.mktemp("ck") / "m.pt", model)
    return p.read_bytes()


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255), st.booleans()), min_size=1, max_size=6),
       st.integers(0, 3))
def test_checkpoint_loader_only_our_errors(checkpoint_bytes, tmp_path_factory, edits, cut_kind):
    """Mutated valid checkpoints (bytes overwritten in the zip headers, the pickle and the central directory; the
    file cut short): ``load_checkpoint`` returns a dict or raises a CheckpointError, never anything else."""
    from yolo_export.nn.checkpoint import load_checkpoint

    data = bytearray(checkpoint_bytes)
    n = len(data)
    pkl = data.find(b"data.pklPK") if b"data.pklPK" in data else data.find(b"data.pkl")
    hot = [0, max(pkl, 0), n - 4096]                           # local header, the pickle, the central directory
    for frac, val, near in edits:
        base = hot[int(frac * 3) % 3] if near else 0
        span = 4096 if near else n
        data[min(n - 1, base + int(frac * span))] = val
    if cut_kind == 1:
        data = data[: n // 2]
    elif cut_kind == 2:
        data = data[: n - 100]
    p = tmp_path_factory.mktemp("ck") / "m.pt"
    p.write_bytes(bytes(data))
    try:
        ck = load_checkpoint(p)
    except YoloExportError as e:
        assert "\n" not in str(e).strip()
        return
    assert isinstance(ck, dict)


def test_default_budgets_admit_real_models():
    """22k names (ImageNet-21k), imgsz 1280 and our largest real metadata pass every budget untouched."""
    import yaml

    names = {i: f"n{i:05d}_some_long_class_name" for i in range(21843)}
    meta = _meta(names=names, imgsz=[1280, 1280], preprocess={"resize": 1463, "crop": 1280})
    enc = metadata.encode(meta)
    assert metadata.decode(enc)["names"] == names
    assert limits.text_depth(enc["names"]) <= limits.DEPTH.limit
    text = json.dumps(metadata.plain(meta))                 # the YAML budget on the same tree (C composer: fast)
    node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert limits._expanded_nodes(node, "metadata.yaml", None) < limits.NODES.limit
    assert len(text) < limits.METADATA_BYTES.limit
