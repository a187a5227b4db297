"""The Backend contract and the registry: every format is one class, declared in one place.

A backend module (``backends/<family>.py``, shipped as ``yolo_export.backends.<family>``) declares its format
name(s), artefact suffix, pip extra, the export arguments it takes, its tolerance, and implements ``export``,
``load``, ``write_metadata`` and ``read_metadata``. Nothing here or in the modules imports a backend library
at import time: each does so inside its methods. Third-party packages add backends through the
``yolo_export.backends`` entry-point group (each entry point names a Backend subclass).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yolo_export.errors import ArgumentError, MissingDependency, NotAvailable, YoloExportError

# Export arguments every format takes, and the full set the CLI knows (with their defaults).
COMMON_ARGS = {"imgsz", "batch", "device", "verify", "output", "data", "fraction", "calib", "threads"}
ARG_DEFAULTS: dict[str, Any] = {
    "imgsz": None, "batch": 1, "device": "cpu", "verify": True, "output": None, "data": None, "fraction": None,
    "threads": None,
    "half": False, "int8": False, "dynamic": False, "simplify": True, "opset": None, "workspace": None,
    "keras": False, "optimize": False, "nms": False, "calib_images": 256, "calib": None,
}
# Ranges checked before any work (name: (type, low, high, what)); a format may narrow them in ``check_args``.
ARG_RANGES: dict[str, tuple] = {
    "imgsz": (int, 32, 4096, "a square input size in pixels"), "batch": (int, 1, 1024, "a batch size"),
    "calib_images": (int, 1, 100_000, "a number of images"), "fraction": (float, 1e-6, 1.0, "a share of the images"),
    "workspace": (float, 1e-3, 1024.0, "GiB"), "opset": (int, 7, 30, "an ONNX opset"),
}
# Family names people type for a format: each resolves to one format, or lists that family's formats.
FAMILIES: dict[str, tuple[str, ...]] = {
    "tensorflow": ("saved_model", "pb", "tflite", "edgetpu", "tfjs"),
    "ov": ("openvino",), "trt": ("engine",), "tensorrt": ("engine",), "onnxruntime": ("onnx",), "ort": ("onnx",),
    "paddlepaddle": ("paddle",),
}
# A precision typed as part of the format name (``tflite-int8``, ``onnx_fp16``) and the flag it sets.
PRECISION_WORDS = {"int8": "int8", "fp16": "half", "half": "half", "float16": "half"}


def split_precision(fmt: str) -> tuple[str, dict]:
    """``"tflite-int8"`` -> ``("tflite", {"int8": True})``; a plain format name -> ``(fmt, {})``."""
    key = str(fmt).lower().strip()
    for sep in ("-", "_"):
        head, _, tail = key.rpartition(sep)
        if head and tail in PRECISION_WORDS:
            return head, {PRECISION_WORDS[tail]: True}
    return str(fmt), {}
ARG_HELP = {
    "half": "fp16 weights/compute", "int8": "8-bit quantisation (calibrated on --data)",
    "dynamic": "dynamic batch dimension", "simplify": "simplify the ONNX graph", "opset": "ONNX opset",
    "workspace": "TensorRT builder workspace in GiB", "keras": "Keras format", "optimize": "mobile optimisation",
    "nms": "non-maximum suppression", "calib_images": "number of INT8 calibration images",
}

# Built-in backend modules, imported on first use (they import no backend library at module level).
BUILTIN_MODULES = ["pytorch", "torchscript", "onnx", "openvino", "ncnn", "paddle", "coreml", "tensorflow",
                   "tfjs", "tensorrt", "mnn", "executorch"]
ENTRY_POINT_GROUP = "yolo_export.backends"


def precision_of(args: dict) -> str:
    return "int8" if args.get("int8") else "fp16" if args.get("half") else "fp32"


PRECISION_TAGS = {"fp16": "_float16", "int8": "_int8"}


def default_output(backend, base: Path, args: dict, model_imgsz: int | None) -> Path:
    """The one naming rule: ``STEM[_<imgsz>][_float16|_int8]<suffix>``. The size part only when it differs from the
    model's, the precision part only when it differs from the format's own (fp32; int8 for the Edge TPU), so
    ``best.onnx`` is the name the reference writes, and a matrix of exports coexists beside the model."""
    tag = ""
    imgsz = args.get("imgsz")
    if imgsz and model_imgsz and int(imgsz) != int(model_imgsz):
        tag += f"_{int(imgsz)}"
    prec = precision_of(args)
    if prec != (getattr(backend, "precisions", None) or ("fp32",))[0]:
        tag += PRECISION_TAGS.get(prec, f"_{prec}")
    return backend.output_path(base.with_name(base.name + tag), args)


def check_range(name: str, value):
    """``value`` as ``ARG_RANGES[name]``'s type, inside its range, else one ArgumentError line."""
    typ, lo, hi, what = ARG_RANGES[name]
    flag = "--" + name.replace("_", "-")
    try:
        if isinstance(value, bool) or (typ is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError
        v = typ(value)
    except (TypeError, ValueError):
        raise ArgumentError(f"{flag} takes {'an integer' if typ is int else 'a number'} ({what}), not {value!r}") \
            from None
    if not lo <= v <= hi and typ is int and lo == 1:
        raise ArgumentError(f"{flag} must be a positive integer up to {hi} ({what}); got {value}")
    if not lo <= v <= hi:
        raise ArgumentError(f"{flag} must be between {lo:g} and {hi:g} ({what}); got {value}")
    return v


class Runner:
    """What runs a model in its runtime (returned by ``Backend.load``): call it with a float32 batch in the model's
    layout; get (N, nc) probabilities. The capabilities it reports:

    ``fixed_batch``: the only batch size the artefact takes (``LoadedModel`` splits and pads), or None;
    ``any_imgsz``: it takes any square input size (a live module), not only the size it was exported at.
    """

    fixed_batch: int | None = None
    any_imgsz: bool = False
    device: str = "cpu"
    threads: int | None = None   # the runtime's own thread count, as it reports it (None: not a CPU runtime)

    def __call__(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class FnRunner(Runner):
    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], fixed_batch: int | None = None, device="cpu",
                 close: Callable[[], None] | None = None):
        self.fn, self.fixed_batch, self.device, self._close = fn, fixed_batch, device, close

    def __call__(self, x):
        return self.fn(x)

    def close(self):
        if self._close:
            self._close()


@dataclass
class ExportContext:
    """What a backend's ``export`` gets: the model, a sample batch, resolved args, metadata and a work dir."""

    model: Any                   # fused fp32 torch module in eval mode, on ``device``
    sample: Any                  # torch tensor (batch, 3, imgsz, imgsz) on ``device``
    args: dict
    metadata: dict
    workdir: Path
    stem: str
    device: Any
    _cache: dict = field(default_factory=dict)

    @property
    def imgsz(self) -> int:
        return int(self.sample.shape[-1])

    @property
    def names(self) -> dict:
        """``{index: class name}`` of the model."""
        return self.metadata["names"]

    @property
    def preprocess(self) -> dict:
        """The preprocessing the model expects (resize, crop, mean, std, layout...), as its metadata records it."""
        return self.metadata["preprocess"]

    @property
    def data(self):
        """``--data`` (a dataset name or ImageFolder root), or None."""
        return self.args.get("data")

    @property
    def precision(self) -> str:
        return precision_of(self.args)

    def build(self, fmt: str, **overrides) -> Path:
        """Export an intermediate artefact of another format into the work dir (no verification).

        Precision flags (``half``, ``int8``) are off unless ``overrides`` set them."""
        key = (fmt, tuple(sorted(overrides.items())))
        if key in self._cache:
            return self._cache[key]
        backend = get(fmt)
        backend.require_export()
        # an intermediate is full precision unless the caller asks otherwise (an INT8 engine quantises itself;
        # it must not be built on an already-quantised ONNX)
        args = {**self.args, "half": False, "int8": False, **overrides}
        sub = self.workdir / f"{fmt}-{len(self._cache)}"
        sub.mkdir(parents=True, exist_ok=True)
        ctx = ExportContext(self.model, self.sample, args, dict(self.metadata, format=fmt), sub, self.stem,
                            self.device)
        path = backend.export(ctx)
        self._cache[key] = path
        return path

    def calibration_images(self, n: int | None = None) -> np.ndarray:
        """float32 NCHW images for INT8 calibration: from ``--data`` (the train split), else generated."""
        from yolo_export.data.samples import calibration_batch

        n = int(n or self.args.get("calib_images") or 256)
        return calibration_batch(self.data, self.imgsz, n, self.metadata.get("preprocess"),
                                 fraction=self.args.get("fraction"))


def model_files(folder, preferred: str, patterns: tuple[str, ...], weights_suffix: str, what: str
                ) -> tuple[Path, Path]:
    """The graph file of a directory artefact (``preferred``, else the first match of ``patterns``) and the weights
    file beside it (same name, ``weights_suffix``). ``what``: the format's name for the one-line errors."""
    folder = Path(folder)
    graph = folder / preferred
    if not graph.exists():
        found = [f for pat in patterns for f in sorted(folder.glob(pat))]
        if not found:
            raise YoloExportError(f"no {what} model ({' / '.join(patterns)}) in {folder}")
        graph = found[0]
    weights = graph.with_suffix(weights_suffix)
    if not weights.exists():
        raise YoloExportError(f"{what} weights {weights.name} missing beside {graph.name} in {folder}")
    return graph, weights


class Backend:
    """A format's backend: the one class that declares and handles a format (export, load -> Runner, metadata).
    Subclasses (one per format, in ``backends/``, or a plugin) set the class attributes and override what they need."""

    name: str = ""                       # the --format value
    aliases: tuple[str, ...] = ()
    title: str = ""                      # human name for tables
    suffix: str = ""                     # '.onnx' for a file, '_openvino_model' for a directory
    is_dir: bool = False
    extra: str = ""                      # pip extra that provides it
    requires: tuple[str, ...] = ()       # import names needed to export and run
    args: frozenset = frozenset()        # export args taken beyond COMMON_ARGS
    layout: str = "NCHW"
    # (max abs prob diff, min top-1 agreement on decisive inputs) judged at export time on a few inputs.
    # INT8 gets no diff bound and a sanity floor that catches broken conversions (they land near chance);
    # its real accuracy is measured on a val split by `yexport benchmark` (goal: >= 98 % agreement there).
    tolerance: dict = {"fp32": (1e-4, 1.0), "fp16": (1e-2, 0.99), "int8": (None, 0.5)}
    builds_on: str | None = None
    can_predict: bool = True
    # The format of the in-memory model itself (the .pt): it runs a live torch module (``module_runner``), is the
    # reference every export is compared with, and is no export target of the benchmark matrix. One built-in.
    is_source: bool = False

    # -- availability --------------------------------------------------------------------------
    def missing(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m.split(".")[0]) is None]

    def is_available(self) -> tuple[bool, str]:
        """Can this machine export this format? (False, one-line reason) if not."""
        miss = self.missing()
        if miss:
            return False, f"needs the '{self.extra}' extra (missing {', '.join(miss)})"
        return True, ""

    def runtime_available(self) -> tuple[bool, str]:
        """Can this machine run an artefact of this format? Defaults to is_available()."""
        return self.is_available()

    def require_export(self) -> None:
        miss = self.missing()
        if miss:
            raise MissingDependency(f"{self.title or self.name} export", self.extra, f"missing {', '.join(miss)}")
        ok, why = self.is_available()
        if not ok:
            raise NotAvailable(f"cannot export {self.title or self.name} here: {why}")

    def require_runtime(self) -> None:
        miss = self.missing()
        if miss:
            raise MissingDependency(f"running a {self.title or self.name} model", self.extra,
                                    f"missing {', '.join(miss)}")
        ok, why = self.runtime_available()
        if not ok:
            raise NotAvailable(f"cannot run a {self.title or self.name} model here: {why}")

    # -- arguments ------------------------------------------------------------------------------
    def accepted_args(self) -> set[str]:
        return set(COMMON_ARGS) | set(self.args)

    def check_args(self, args: dict) -> None:
        """Refuse combinations this format does not take (raise ArgumentError). Called after defaults."""
        if args.get("half") and args.get("int8"):
            raise ArgumentError(f"{self.name}: choose one of --half and --int8")

    def resolve_args(self, given: dict) -> dict:
        """Validate user-given args (only those the user set) and fill defaults."""
        accepted = self.accepted_args()
        bad = [k for k, v in given.items() if k not in accepted and v not in (None, False, ARG_DEFAULTS.get(k))]
        if bad:
            takes = ", ".join(f"--{a.replace('_', '-')}" for a in sorted(set(self.args)))
            raise ArgumentError(
                f"format '{self.name}' does not take {', '.join('--' + b.replace('_', '-') for b in bad)}"
                f" (it takes {takes or 'no format-specific options'}, plus --imgsz --batch --device)"
            )
        args = {k: ARG_DEFAULTS.get(k) for k in accepted}
        args.update({k: v for k, v in given.items() if v is not None and k in accepted})
        for k, v in list(args.items()):
            if k in ARG_RANGES and v is not None and (k in given or k == "batch"):
                args[k] = check_range(k, v)
        if args.get("device") is not None:
            from yolo_export.device import parse_device

            try:
                parse_device(args["device"])
            except YoloExportError as e:
                raise ArgumentError(str(e)) from None
        self.check_args(args)
        return args

    # -- paths ----------------------------------------------------------------------------------
    def output_path(self, base: Path, args: dict) -> Path:
        """``base`` is the source path without suffix (``runs/x/best``), with ``default_output``'s tags."""
        return base.with_name(base.name + self.suffix)

    content: tuple[str, ...] = ()        # globs that a folder artefact of this format holds (recognised by content)

    def recognise(self, path: Path) -> bool:
        """Is ``path`` an artefact of this format although its name does not say so (``-o ov64``)? By its files."""
        return bool(self.content) and path.is_dir() and all(any(path.glob(pat)) for pat in self.content)

    def matches(self, path: Path) -> bool:
        name = path.name.rstrip("/")
        if self.is_dir:
            return path.is_dir() and name.endswith(self.suffix)
        return bool(self.suffix) and name.endswith(self.suffix) and not path.is_dir()

    # -- the work -------------------------------------------------------------------------------
    def export(self, ctx: ExportContext) -> Path:  # pragma: no cover - interface
        raise NotImplementedError

    def load(self, path: Path, device: str, metadata: dict, threads: int | None = None) -> Runner:  # pragma: no cover
        """``threads``: CPU threads for the runtime (already resolved by ``yolo_export.threads``)."""
        raise NotImplementedError

    def module_runner(self, model, device: str = "cpu", half: bool = False, threads: int | None = None) -> Runner:
        """A runner for a live torch module (``is_source`` formats only)."""
        raise NotImplementedError(f"{self.name} does not run in-memory modules")

    def write_metadata(self, path: Path, meta: dict) -> None:
        """Default for directory formats: ``metadata.yaml`` beside the model."""
        from yolo_export.metadata import to_yaml_text
        from yolo_export.utils import atomic_write_bytes

        target = (path if path.is_dir() else path.parent) / "metadata.yaml"
        atomic_write_bytes(target, to_yaml_text(meta).encode())

    def read_metadata(self, path: Path) -> dict:
        from yolo_export.metadata import from_yaml_text

        from yolo_export.limits import METADATA_BYTES

        target = (path if path.is_dir() else path.parent) / "metadata.yaml"
        if not target.exists():
            return {}
        METADATA_BYTES.check(target.stat().st_size, "metadata.yaml size", target)
        return from_yaml_text(target.read_bytes(), source=target)

    def graph_stats(self, path: Path) -> dict:
        """``{"params", "gflops"}`` counted from the artefact's own graph and weights (fused, one image), or None
        for both with ``stats_reason``. Formats whose graph can be read without running it override this."""
        return {"params": None, "gflops": None,
                "stats_reason": f"not counted for {self.title or self.name} artefacts (count them on the .pt)"}

    def version(self) -> str | None:
        """The backend library's version, for reports."""
        for m in self.requires:
            try:
                from importlib.metadata import version

                return version(_DIST_NAMES.get(m, m))
            except Exception:  # noqa: BLE001
                continue
        return None

    def __repr__(self):
        return f"<Backend {self.name}>"


_DIST_NAMES = {"openvino": "openvino", "ncnn": "ncnn", "onnxruntime": "onnxruntime", "paddle": "paddlepaddle",
               "tensorflow": "tensorflow-cpu", "coremltools": "coremltools", "tensorrt": "tensorrt", "MNN": "MNN",
               "executorch": "executorch", "tensorflowjs": "tensorflowjs", "torch": "torch"}

# ------------------------------------------------------------------------------------------ registry
_REGISTRY: dict[str, Backend] = {}
_ALIASES: dict[str, str] = {}
_LOADED = False
_PLUGINS: dict[str, str] = {}   # format name -> entry point that registered it


def register(cls):
    """Class decorator: register a Backend subclass under its name and aliases."""
    inst = cls() if isinstance(cls, type) else cls
    if not inst.name:
        raise YoloExportError(f"backend {cls!r} has no name")
    _REGISTRY[inst.name] = inst
    for a in inst.aliases:
        _ALIASES[a] = inst.name
    return cls


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for mod in BUILTIN_MODULES:
        try:
            importlib.import_module(f"yolo_export.backends.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"yolo_export.backends.{mod}":
                raise
    if os.environ.get("YOLO_EXPORT_NO_PLUGINS"):
        return
    from importlib.metadata import entry_points

    from yolo_export.utils import LOGGER

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            inst = obj() if isinstance(obj, type) and issubclass(obj, Backend) else obj
            if not isinstance(inst, Backend):
                raise YoloExportError(f"{ep.value} is not a yolo_export.registry.Backend subclass or instance")
            if not inst.name:
                raise YoloExportError(f"{ep.value} has no format name")
            if inst.name in _REGISTRY and inst.name not in _PLUGINS:
                raise YoloExportError(f"format '{inst.name}' is built in; a plugin cannot replace it")
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the tool
            LOGGER.warning(f"warning: backend plugin {ep.name!r} failed to load: {e}")
            continue
        register(inst)
        _PLUGINS[inst.name] = ep.value


def reload() -> None:
    """Forget plugin backends and read the ``yolo_export.backends`` entry points again (built-ins stay).

    For a long-running process (or a test) after a plugin package was installed or removed."""
    global _LOADED
    for name in list(_PLUGINS):
        _REGISTRY.pop(name, None)
        for alias in [a for a, n in _ALIASES.items() if n == name]:
            del _ALIASES[alias]
    _PLUGINS.clear()
    _LOADED = False
    importlib.invalidate_caches()
    _load_all()


def names() -> list[str]:
    _load_all()
    return list(_REGISTRY)


def all_backends() -> list[Backend]:
    _load_all()
    return list(_REGISTRY.values())


def get(fmt: str) -> Backend:
    _load_all()
    key = str(fmt).lower().strip().lstrip(".")
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    from yolo_export.utils import nearest

    fam = FAMILIES.get(key) or FAMILIES.get(key.replace("_", "-"))
    if fam and len(fam) == 1 and fam[0] in _REGISTRY:
        return _REGISTRY[fam[0]]
    if fam:
        raise ArgumentError(f"'{fmt}' is a family of formats: choose one of {', '.join(fam)} "
                            f"(e.g. --format {fam[0]})")
    guess = nearest(key, list(_REGISTRY) + list(_ALIASES) + list(FAMILIES))
    guess = FAMILIES[guess][0] if guess in FAMILIES else _ALIASES.get(guess, guess) if guess else None
    hint = f"; did you mean '{guess}'?" if guess else ""
    raise ArgumentError(f"unknown format '{fmt}'{hint} (formats: {', '.join(_REGISTRY)})")


def source_backend() -> Backend:
    """The backend of in-memory models (``Backend.is_source``): the format a ``.yaml`` / ``.pt`` model is in."""
    _load_all()
    for b in _REGISTRY.values():   # built-ins register first, so a plugin cannot take this role
        if b.is_source:
            return b
    raise YoloExportError("no backend runs in-memory models (is the built-in PyTorch backend missing?)")


def for_path(path: str | Path) -> Backend:
    _load_all()
    p = Path(path)
    if not p.exists():
        raise YoloExportError(f"model not found: {path}")
    # longest suffix first so that '_int8.tflite' style names resolve to the most specific backend
    for b in sorted(_REGISTRY.values(), key=lambda b: -len(b.suffix)):
        if b.matches(p):
            if b.is_dir:
                from yolo_export.limits import check_folder

                check_folder(p)
            return b
    for b in _REGISTRY.values():  # a name that does not say (``-o ov64``, ``models/cls/1/model.xml``): by content
        try:
            if b.recognise(p):
                return b
        except OSError:
            continue
    raise YoloExportError(
        f"cannot tell the format of {path} (known: "
        + ", ".join(f"{b.suffix}" + ("/" if b.is_dir else "") for b in _REGISTRY.values() if b.suffix)
        + ")"
    )


def machine_summary() -> dict:
    return {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version(),
            "cpu_count": os.cpu_count()}
