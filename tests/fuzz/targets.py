"""One fuzz target per reader of untrusted bytes. Each takes the fuzzer's bytes and may only end normally or with one
of the project's own errors (the exceptions a target lists in ``ALLOWED`` besides those); anything else is a finding.

Imported by ``fuzz.py`` inside ``atheris.instrument_imports`` so that coverage is measured on the project's code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from yolo_export import limits, metadata
from yolo_export.errors import YoloExportError

_DIR = Path(tempfile.mkdtemp(prefix="yx-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))


def _file(data: bytes, name: str) -> Path:
    p = _DIR / name
    p.write_bytes(data)
    return p


def metadata_decode(data: bytes) -> None:
    """The string map every carrier hands to ``metadata.decode`` (ONNX props, rt_info, CoreML, TorchScript...)."""
    import atheris

    fdp = atheris.FuzzedDataProvider(data)
    keys = list(metadata.KEYS) + ["format", "x"]
    raw = {}
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        raw[keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]] = fdp.ConsumeUnicodeNoSurrogates(
            fdp.ConsumeIntInRange(0, 200))
    metadata.decode(raw, "fuzz")


def metadata_yaml(data: bytes) -> None:
    metadata.from_yaml_text(data, "fuzz/metadata.yaml")


def json_document(data: bytes) -> None:
    try:
        limits.loads_json(data, "fuzz", "fuzz")
    except ValueError:                       # json's own syntax error (UnicodeDecodeError is a ValueError too)
        pass


def tensorrt_header(data: bytes) -> None:
    from yolo_export.backends.tensorrt import read_header

    meta, offset = read_header(_file(data, "x.engine"))
    if meta:
        metadata.decode(meta, "fuzz")
    assert 0 <= offset <= len(data)


def pte_trailer(data: bytes) -> None:
    from yolo_export import registry

    registry.get("executorch").read_metadata(_file(data, "x.pte"))


def tflite_metadata(data: bytes) -> None:
    from yolo_export.backends.tensorflow import tflite_read

    tflite_read(_file(data, "x.tflite"))


def torchscript_metadata(data: bytes) -> None:
    from yolo_export import registry

    registry.get("torchscript").read_metadata(_file(data, "x.torchscript"))


def tfjs_manifest(data: bytes) -> None:
    from yolo_export.backends.tfjs import check_manifest

    d = _DIR / "m_web_model"
    d.mkdir(exist_ok=True)
    (d / "model.json").write_bytes(data)
    check_manifest(d)


def checkpoint(data: bytes) -> None:
    from yolo_export.nn.checkpoint import load_checkpoint

    load_checkpoint(_file(data, "x.pt"))


TARGETS = {f.__name__: f for f in (metadata_decode, metadata_yaml, json_document, tensorrt_header, pte_trailer,
                                    tflite_metadata, torchscript_metadata, tfjs_manifest, checkpoint)}
ALLOWED = (YoloExportError,)
MODULES = {"tensorrt_header": ["yolo_export.backends.tensorrt"], "pte_trailer": ["yolo_export.backends.executorch"],
           "tflite_metadata": ["yolo_export.backends.tensorflow"],
           "torchscript_metadata": ["yolo_export.backends.torchscript"], "tfjs_manifest": ["yolo_export.backends.tfjs"],
           "checkpoint": ["torch", "yolo_export.nn.checkpoint"]}


def prepare(name: str) -> None:
    """Import what ``name`` reads with (call inside ``atheris.instrument_imports`` to measure its coverage)."""
    import importlib

    for m in ["yaml", "yolo_export.registry", *MODULES.get(name, [])]:
        importlib.import_module(m)
