"""One metadata schema for every format, and the one place that encodes and decodes it.

Values that the widely used YOLO runtimes parse as Python literals (``names``, ``imgsz``, ``args``, ``stride``,
``batch``, ``channels``) are written as Python-literal text, so artefacts move between tools; our own structured
values (``preprocess``, ``verification``) are JSON. Reading uses ``ast.literal_eval`` or ``json`` and never ``eval``.
"""

from __future__ import annotations

import ast
import datetime as _dt
import json

KEYS = ("description", "author", "date", "version", "license", "stride", "task", "batch", "imgsz", "names",
        "args", "channels", "preprocess", "verification")
LITERAL_KEYS = {"names", "imgsz", "args", "stride", "batch", "channels"}
JSON_KEYS = {"preprocess", "verification"}

AUTHOR = "yolo-export"
LICENSE = "AGPL-3.0 License"


def build(model, *, imgsz: int, batch: int, args: dict, preprocess: dict, fmt: str) -> dict:
    from yolo_export import __version__

    scale = getattr(model, "scale", None) or ""
    return {
        "description": f"yolo-export YOLOv8{scale}-cls classifier ({fmt})",
        "author": AUTHOR,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "version": __version__,
        "license": LICENSE,
        "stride": 1,
        "task": "classify",
        "batch": int(batch),
        "imgsz": [int(imgsz), int(imgsz)],
        "names": {int(k): str(v) for k, v in model.names.items()},
        "args": {k: v for k, v in args.items() if isinstance(v, (bool, int, float, str)) or v is None},
        "channels": 3,
        "preprocess": dict(preprocess),
        "format": fmt,
    }


def encode(meta: dict) -> dict[str, str]:
    """Metadata dict -> string map (for carriers that hold strings: ONNX, TorchScript, CoreML, OpenVINO...)."""
    out = {}
    for k, v in meta.items():
        if v is None:
            continue
        if k in JSON_KEYS:
            out[k] = json.dumps(v, sort_keys=True)
        elif k in LITERAL_KEYS or not isinstance(v, str):
            out[k] = repr(_literal(v))
        else:
            out[k] = v
    return out


def _literal(v):
    if isinstance(v, dict):
        return {_literal(k): _literal(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_literal(x) for x in v]
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def decode(raw: dict) -> dict:
    """String map -> metadata dict. Accepts our artefacts and those of other YOLO tools."""
    out = {}
    for k, v in (raw or {}).items():
        out[k] = decode_value(k, v)
    if "names" in out and isinstance(out["names"], dict):
        out["names"] = {int(i): str(n) for i, n in out["names"].items()}
    elif "names" in out and isinstance(out["names"], list):
        out["names"] = dict(enumerate(map(str, out["names"])))
    if isinstance(out.get("imgsz"), int):
        out["imgsz"] = [out["imgsz"], out["imgsz"]]
    return out


def decode_value(key: str, v):
    if not isinstance(v, str):
        return v
    s = v.strip()
    if key in JSON_KEYS:
        try:
            return json.loads(s)
        except ValueError:
            pass
    if key in LITERAL_KEYS or key in JSON_KEYS or (s[:1] in "[{(" and s[-1:] in "]})"):
        try:
            return ast.literal_eval(s)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            try:
                return json.loads(s)
            except ValueError:
                return v
    if key in ("stride", "batch", "channels"):
        try:
            return int(s)
        except ValueError:
            return v
    return v


def to_yaml_text(meta: dict) -> str:
    """metadata.yaml for directory formats: plain YAML types only (read back with yaml.safe_load)."""
    import yaml

    return yaml.safe_dump(_literal(meta), sort_keys=False, allow_unicode=True)


def from_yaml_text(text: str) -> dict:
    import yaml

    return decode(yaml.safe_load(text) or {})
