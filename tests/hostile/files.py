"""Generators of hostile files (nothing here is committed: every file is built by the test that uses it)."""

from __future__ import annotations

import io
import json
import pickle
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

NAMES = {0: "a", 1: "b", 2: "c"}
EOCD = b"PK\x05\x06" + b"\0" * 18          # an empty zip's end-of-central-directory record (22 bytes)


# ------------------------------------------------------------------------------------------ images
def jpeg(path: Path, w: int = 48, h: int = 40) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def png_bomb(path: Path, side: int = 20000) -> Path:
    """A PNG whose header claims side x side pixels (the pixel data is a few bytes: a decoder allocates first)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * side) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def jpeg_bomb(path: Path, side: int = 65000) -> Path:
    """A real small JPEG whose SOF header is rewritten to claim side x side pixels."""
    from PIL import Image

    buf = io.BytesIO()

    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    i = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, side, side)
    path.write_bytes(bytes(data))
    return path


# ------------------------------------------------------------------------------------------ ONNX
def tiny_onnx(path: Path, props: dict[str, str] | None = None, nc: int = 3, imgsz: int = 32) -> Path:
    """A real, runnable ONNX classifier (mean over pixels of each channel -> softmax) with ``props`` as metadata."""
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, imgsz, imgsz])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, nc])
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("Softmax", ["m"], ["output0"], axis=1)]
    graph = helper.make_graph(nodes, "tiny", [inp], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (props if props is not None else good_props(imgsz)).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def good_props(imgsz: int = 32) -> dict[str, str]:
    return {"names": repr(NAMES), "imgsz": repr([imgsz, imgsz]), "batch": "1", "task": "classify",
            "preprocess": json.dumps({"resize": imgsz, "crop": imgsz, "interpolation": "bilinear",
                                      "mean": [0, 0, 0], "std": [1, 1, 1], "layout": "NCHW"})}


def onnx_external(path: Path, location: str) -> Path:
    """An ONNX model whose one initializer lives in external data at ``location``."""
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3], [0.0, 0.0, 0.0])
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("float_data")
    for k, v in (("location", location), ("offset", "0"), ("length", "12")):
        w.external_data.add(key=k, value=v)
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("Add", ["m", "w"], ["s"]), helper.make_node("Softmax", ["s"], ["output0"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "ext", [inp], [out], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in good_props().items():
        model.metadata_props.add(key=k, value=v)
    path.write_bytes(model.SerializeToString())
    return path


# ------------------------------------------------------------------------------------------ pickles
class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def reduce_pickle(cmd: str, protocol: int = 2) -> bytes:
    import os

    return pickle.dumps(_Reduce(os.system, (cmd,)), protocol=protocol)


def zip_pickle(path: Path, pkl: bytes, name: str = "archive") -> Path:
    """A torch-style zip checkpoint whose ``data.pkl`` is ``pkl``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}/data.pkl", pkl)
        z.writestr(f"{name}/byteorder", "little")
        z.writestr(f"{name}/version", "3\n")
        z.writestr(f"{name}/.data/serialization_id", "0")
    return path


def zip_attacks(cmd: str) -> dict[str, bytes]:
    """The "already safe" zip-pickle payloads, each a data.pkl that would run ``cmd`` under a plain unpickler."""
    q = repr(cmd).encode()
    code = f"__import__('os').system({cmd!r})".encode()
    import numpy as np

    obj = np.empty(1, dtype=object)
    obj[0] = _Reduce(__import__("os").system, (cmd,))
    return {
        "eval": b"cbuiltins\neval\n(V" + code + b"\ntR.",
        "exec": b"cbuiltins\nexec\n(V" + code + b"\ntR.",
        "getattr": (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(V" + cmd.encode() + b"\ntR."),
        "proto4": (b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94" + b"\x8c" + bytes([len(cmd)]) + cmd.encode()
                   + b"\x85R."),
        "inst": b"(V" + cmd.encode() + b"\nios\nsystem\n.",
        "ext": b"\x80\x02\x82\x01(V" + cmd.encode() + b"\ntR.",
        "copyreg": (b"ccopyreg\n_reconstructor\n(cos\nsystem\nc__builtin__\nobject\nNtR(V" + cmd.encode()
                    + b"\ntR."),
        "ultralytics": b"cultralytics.nn.tasks\nsystem\n(V" + cmd.encode() + b"\ntR.",
        "ultralytics_os": b"cultralytics.utils\nos.system\n(V" + cmd.encode() + b"\ntR.",
        "numpy_object": pickle.dumps(obj, protocol=2),
        "q": q,  # unused; keeps the repr of the command for debugging
    }


def legacy_tar(path: Path, cmd: str) -> Path:
    """A legacy (pre-1.6) tar checkpoint whose first member is a reduce payload."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("sys_info", "pickle", "storages", "tensors"):
            data = reduce_pickle(cmd)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


# ------------------------------------------------------------------------------------------ TorchScript
def _evil_module(target: str):
    import torch

    class Overwrite(torch.nn.Module):
        def __init__(self, p: str):
            super().__init__()
            self.p = p

        @torch.jit.export
        def __getstate__(self) -> tuple[str, bool]:
            return (self.p, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[str, bool]) -> None:
            t = torch.from_file(state[0], shared=True, size=5, dtype=torch.uint8)
            t.fill_(80)
            self.p = str(int(t.sum()))
            self.training = state[1]

        def forward(self, x):
            return x

    class Outer(torch.nn.Module):
        def __init__(self, p: str):
            super().__init__()
            self.e = Overwrite(p)

        def forward(self, x):
            return self.e(x)

    return torch.jit.script(Outer(target))


def torchscript_overwriter(path: Path, target: Path, extra: dict | None = None) -> Path:
    """A TorchScript archive whose ``__setstate__`` overwrites the first bytes of ``target`` when loaded."""
    import torch

    keep = target.read_bytes()
    torch.jit.save(_evil_module(str(target)), str(path),
                   _extra_files={"config.txt": json.dumps(extra)} if extra else {})
    target.write_bytes(keep)                    # scripting/saving runs __setstate__ once: undo it here
    return path


# ------------------------------------------------------------------------------------------ checkpoints
def real_checkpoint(path: Path, nc: int = 3) -> Path:
    from yolo_export.nn.checkpoint import save_checkpoint
    from yolo_export.nn.model import ClassificationModel

    model = ClassificationModel("yolov8n-cls.yaml", nc=nc)
    model.names = dict(NAMES) if nc == 3 else {i: f"c{i}" for i in range(nc)}
    model.imgsz = 32
    return save_checkpoint(path, model)


def tweak_checkpoint(src: Path, dst: Path, fn) -> Path:
    import torch

    ck = torch.load(src, map_location="cpu", weights_only=True)
    fn(ck)
    torch.save(ck, dst)
    return dst


def shared_nest(depth: int = 9, width: int = 10):
    x = [0] * width
    for _ in range(depth):
        x = [x] * width
    return x


def deflated_storage(src: Path, dst: Path, raw_mb: int = 512) -> Path:
    """``src`` with its largest storage record replaced by ``raw_mb`` MB of zeros stored deflated (~0.5 MB)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        storages = [i for i in zin.infolist() if "/data/" in i.filename]
        target = max(storages, key=lambda i: i.file_size).filename
        for info in zin.infolist():
            if info.filename != target:
                zout.writestr(info, zin.read(info))
                continue
            big = zipfile.ZipInfo(target)
            big.compress_type = zipfile.ZIP_DEFLATED
            with zout.open(big, "w", force_zip64=True) as f:
                chunk = b"\0" * (1 << 20)
                for _ in range(raw_mb):
                    f.write(chunk)
    return dst


# ------------------------------------------------------------------------------------------ other carriers
def tflite_with_bomb(path: Path, gib: int = 1) -> Path:
    """A 1 MB blob followed by a zip whose ``metadata.json`` inflates to ``gib`` GiB (of spaces)."""
    import os

    body = b"\x1c\0\0\0TFL3" + os.urandom((1 << 20) - 8)   # a TFLite file identifier, so the reader gets that far
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b" " * (1 << 20)
    first = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    unit = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    n = gib << 10
    data = first + unit * (n - 1) + comp.flush()
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(chunk, crc)
    out = io.BytesIO()
    out.write(body)
    off = out.tell()
    name = b"metadata.json"
    size = n << 20
    out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 45, 0, 8, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(name), 20))
    out.write(name + struct.pack("<HHQQ", 1, 16, size, len(data)))
    out.write(data)
    cd = out.tell()
    out.write(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45, 45, 0, 8, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                          len(name), 20, 0, 0, 0, 0, off))
    out.write(name + struct.pack("<HHQQ", 1, 16, size, len(data)))
    cd_end = out.tell()
    out.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 1, 1, cd_end - cd, cd))
    out.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, cd_end, 1))
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, cd_end - cd, 0xFFFFFFFF, 0))
    path.write_bytes(out.getvalue())
    return path


def billion_laughs(levels: int = 9) -> str:
    lines = ["names: {0: a}", "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def ncnn_dir(folder: Path, metadata_yaml: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.ncnn.param").write_text("7767517\n0 0\n")
    (folder / "model.ncnn.bin").write_bytes(b"")
    (folder / "metadata.yaml").write_text(metadata_yaml)
    return folder


def good_yaml(imgsz: int = 32) -> str:
    import yaml

    return yaml.safe_dump({"names": NAMES, "imgsz": [imgsz, imgsz], "batch": 1, "task": "classify"})


def tfjs_dir(folder: Path, paths: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = {"format": "graph-model", "generatedBy": "hostile", "modelTopology": {"node": []},
             "weightsManifest": [{"paths": paths, "weights": [{"name": "w", "shape": [3], "dtype": "float32"}]}]}
    (folder / "model.json").write_text(json.dumps(model))
    (folder / "metadata.yaml").write_text(good_yaml())
    return folder


def trt_engine(path: Path, header: bytes, declared: int | None = None) -> Path:
    n = len(header) if declared is None else declared
    path.write_bytes(struct.pack("<I", n) + header + b"\0" * 4096)
    return path


def pte(path: Path, blob: bytes, declared: int | None = None) -> Path:
    n = len(blob) if declared is None else declared
    head = b"\0" * 4 + b"ET12" + b"\0" * 4088           # an ExecuTorch file identifier, so the reader gets that far
    path.write_bytes(head + blob + struct.pack("<Q", n) + b"YXMETA01")
    return path
