"""One metadata schema for every format, and the one place that encodes and decodes it.

Values that the widely used YOLO runtimes parse as Python literals (``names``, ``imgsz``, ``args``, ``stride``,
``batch``, ``channels``) are written as Python-literal text, so artefacts move between tools; our own structured
values (``preprocess``, ``verification``) are JSON. Reading uses ``ast.literal_eval`` or ``json`` and never ``eval``.
"""

from __future__ import annotations

import ast
import datetime as _dt
import json
import math

from yolo_export.errors import MetadataError

KEYS = ("description", "author", "date", "version", "license", "stride", "task", "batch", "imgsz", "names",
        "args", "channels", "preprocess", "verification")
LITERAL_KEYS = {"names", "imgsz", "args", "stride", "batch", "channels"}
JSON_KEYS = {"preprocess", "verification"}

AUTHOR = "yolo-export"
LICENSE = "AGPL-3.0 License"


def build(model, *, imgsz: int, batch: int, args: dict, preprocess: dict, fmt: str) -> dict:
    from yolo_export._version import __version__

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
            out[k] = repr(plain(v))
        else:
            out[k] = v
    return out


_SCALARS = (bool, int, float, str, type(None))


def plain(v):
    """Any value -> plain Python data (dict, list, str, int, float, bool, None): the one encoding rule behind every
    carrier (Python-literal text, JSON, YAML) and the CLI's JSON. NumPy/torch scalars and arrays become numbers and
    lists, objects with ``to_dict`` (results) their dict, anything else its ``str``; keys stay scalars."""
    if isinstance(v, dict):
        return {_key(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, _SCALARS):
        return v
    if hasattr(v, "tolist"):
        return plain(v.tolist())
    if hasattr(v, "to_dict"):
        return plain(v.to_dict())
    return str(v)


def _key(k):
    k = k.tolist() if hasattr(k, "tolist") else k       # a NumPy integer key is the integer
    return k if isinstance(k, _SCALARS) else str(k)


def to_json(meta, **kwargs) -> str:
    """``meta`` as JSON text through :func:`plain` (carriers that hold JSON: TorchScript, TensorRT's header)."""
    return json.dumps(plain(meta), **kwargs)


def decode(raw: dict, source=None) -> dict:
    """String map -> metadata dict. Accepts our artefacts and those of other YOLO tools.

    Every budget (``yolo_export.limits``) is checked: the total size and nesting of the values before they are
    parsed, then the class count, ``imgsz``, ``batch`` and the preprocessing sizes before anything uses them."""
    from yolo_export import limits

    raw = raw or {}
    if not isinstance(raw, dict):
        raise MetadataError(f"{_where(source)}metadata is a {type(raw).__name__}, not a key/value map")
    total = sum(len(v) if isinstance(v, (str, bytes)) else 0 for v in raw.values()) + sum(len(str(k)) for k in raw)
    limits.METADATA_BYTES.check(total, "metadata size", source)
    limits.DEPTH.check(limits.obj_depth(raw, limits.DEPTH.limit), "metadata nesting", source)
    out = {}
    for k, v in raw.items():
        out[k] = decode_value(k, v, source)
    try:
        if "names" in out and isinstance(out["names"], dict):
            out["names"] = {int(i): str(n) for i, n in out["names"].items()}
        elif "names" in out and isinstance(out["names"], list):
            out["names"] = dict(enumerate(map(str, out["names"])))
        elif "names" in out:  # a bare string ("'cat'"), undecodable bytes: not a class list
            raise TypeError
    except (TypeError, ValueError):
        raise MetadataError(f"{_where(source)}metadata names must map class indices to names") from None
    if isinstance(out.get("imgsz"), int):
        out["imgsz"] = [out["imgsz"], out["imgsz"]]
    if isinstance(out.get("args"), dict):
        out["args"] = _precision_args(out["args"])
    check(out, source)
    return out


# The reference package records the export precision as ``args.quantize`` (16/"fp16", 8/"int8"; its older releases
# wrote ``half``/``int8`` flags, as we do). Runners read the flags.
_QUANTIZE_FLAGS = {"16": "half", "fp16": "half", "half": "half", "8": "int8", "int8": "int8"}


def _precision_args(args: dict) -> dict:
    flag = _QUANTIZE_FLAGS.get(str(args.get("quantize")).strip().lower())
    if flag and flag not in args:
        return {**args, flag: True}
    return args


def check(meta: dict, source=None) -> dict:
    """Budgets and types of the values that size allocations: class count, imgsz, batch, preprocess resize/crop."""
    from yolo_export import limits

    names = meta.get("names")
    if isinstance(names, (dict, list)):
        limits.CLASSES.check(len(names), "metadata names", source)
    imgsz = meta.get("imgsz")
    if imgsz is not None:
        sizes = imgsz if isinstance(imgsz, (list, tuple)) else [imgsz]
        if not sizes or len(sizes) > 2:
            raise MetadataError(f"{_where(source)}metadata imgsz must be one or two sizes (got {str(imgsz)[:40]})")
        for i, v in enumerate(sizes):
            _size(v, f"metadata imgsz[{i}]", limits.IMGSZ, source)
    if meta.get("batch") is not None:
        _size(meta["batch"], "metadata batch", limits.BATCH, source)
    pp = meta.get("preprocess")
    if pp is not None:
        if not isinstance(pp, dict):
            raise MetadataError(f"{_where(source)}metadata preprocess must be a map (got {type(pp).__name__})")
        for key in ("resize", "crop"):
            if pp.get(key) is not None:
                _size(pp[key], f"metadata preprocess.{key}", limits.IMGSZ, source)
        for key in ("mean", "std", "value_range"):
            v = pp.get(key)
            if v is not None and (not isinstance(v, (list, tuple)) or len(v) > 4
                                  or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
                raise MetadataError(f"{_where(source)}metadata preprocess.{key} must be up to 4 numbers")
            if v is not None and not all(math.isfinite(x) and (x or key != "std") for x in v):
                raise MetadataError(f"{_where(source)}metadata preprocess.{key} must be finite numbers"
                                    + (", none of them 0" if key == "std" else "") + f" (got {str(v)[:60]})")
    return meta


def run_args(meta: dict) -> dict:
    """The export arguments recorded in ``meta`` (``half``, ``dynamic``...), or {} when there are none or another
    tool wrote something that is not a map (kept as read, never parsed or used)."""
    args = (meta or {}).get("args")
    return args if isinstance(args, dict) else {}


def _size(v, field: str, budget, source) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise MetadataError(f"{_where(source)}{field} must be a positive integer (got {str(v)[:40]!r})")
    return budget.check(v, field, source)


def _where(source) -> str:
    return f"{source}: " if source else ""


def decode_value(key: str, v, source=None):
    from yolo_export import limits

    if not isinstance(v, str):
        return v
    s = v.strip()
    if key in JSON_KEYS:
        try:
            return limits.loads_json(s, f"metadata {key}", source)
        except ValueError:
            pass
    if key in LITERAL_KEYS or key in JSON_KEYS or (s[:1] in "[{(" and s[-1:] in "]})"):
        limits.DEPTH.check(limits.text_depth(s), f"metadata {key} nesting", source)
        try:
            return ast.literal_eval(s)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            try:
                return json.loads(s)
            except (ValueError, RecursionError):
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

    return yaml.safe_dump(plain(meta), sort_keys=False, allow_unicode=True)


def from_yaml_text(text: str | bytes, source=None) -> dict:
    """metadata.yaml -> metadata dict, through the budgeted YAML reader (no Python tags, aliases counted)."""
    import yaml

    from yolo_export import limits

    try:
        doc = limits.load_yaml(text, "metadata.yaml", source)
    except yaml.YAMLError as e:
        raise MetadataError(f"{_where(source)}metadata.yaml is not valid YAML ({str(e).splitlines()[0]})") from None
    return decode(doc or {}, source)
