"""The Backend contract and the registry: every format is one class, declared in one place.

A backend module (``backends/<family>.py``, shipped as ``yolo_export.backends.<family>``) declares its format
name(s), artefact suffix, pip extra, the export arguments it takes, its tolerance, and implements ``export``,
``load``, ``write_metadata`` and ``read_metadata``. Nothing here or in the modules imports a backend library
at import time: each does so inside its methods. Third-party packages add backends through the
``yolo_export.backends`` entry-point group (each entry point names a Backend subclass).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yolo_export import options
from yolo_export.errors import ArgumentError, FileError, MissingDependency, NotAvailable, YoloExportError
from yolo_export.options import CALIB_IMAGES, COMMON_OPTIONS, DYNAMIC, HALF, INT8, SHARED_OPTIONS, Option  # noqa: F401

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


ENTRY_POINT_GROUP = "yolo_export.backends"


def precision_of(args: dict) -> str:
    return "int8" if args.get("int8") else "fp16" if args.get("half") else "fp32"


def _not_applying(o: Option, precision: str) -> str:
    """The line for option ``o`` given in a ``precision`` export it does not apply to, naming the fix: the flag that
    selects a precision it applies to (``--calib-images only applies with --int8``), else the one to drop."""
    need = options.applies_with(o)
    if need.startswith("--"):
        return f"{o.flag} only applies with {need}: add {need}, or drop {o.flag}"
    given = options.PRECISION_FLAGS.get(precision, precision)
    return f"{o.flag} only applies to {need}: drop {given}, or drop {o.flag}"


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
    if prec != backend.precisions[0]:
        tag += PRECISION_TAGS.get(prec, f"_{prec}")
    return backend.output_path(base.with_name(base.name + tag), args)


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
    destination: Path | None = None   # where the verified artefact will be moved (for messages); None: intermediate
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

        n = int(n or self.args.get(CALIB_IMAGES.name) or CALIB_IMAGES.default)
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
            raise FileError(f"no {what} model ({' / '.join(patterns)}) in {folder}")
        graph = found[0]
    weights = graph.with_suffix(weights_suffix)
    if not weights.exists():
        raise FileError(f"{what} weights {weights.name} missing beside {graph.name} in {folder}")
    return graph, weights


class Backend:
    """A format's backend: the one class that declares and handles a format (export, load -> Runner, metadata).
    One per format, in ``backends/`` (or a plugin). A format declares itself in its class statement, as keywords::

        @register
        class OnnxBackend(Backend, name="onnx", title="ONNX", suffix=".onnx", extra="onnx",
                          requires=("onnx", "onnxruntime"), options=(HALF, INT8, DYNAMIC, SIMPLIFY, OPSET)):

    (setting the same names as class attributes works too) and overrides the methods it needs."""

    name: str = ""                       # the --format value
    aliases: tuple[str, ...] = ()
    title: str = ""                      # human name for tables
    suffix: str = ""                     # '.onnx' for a file, '_openvino_model' for a directory
    is_dir: bool = False
    content: tuple[str, ...] = ()        # globs that a folder artefact of this format holds (recognised by content)
    # globs (relative to the folder; '*' stays at the top unless the glob names a subfolder) of every file a folder
    # artefact of this format may hold, its own exports' and other tools'; a folder holding anything else is never
    # replaced (default: ``content`` and metadata.yaml)
    writes: tuple[str, ...] = ()
    extra: str = ""                      # pip extra that provides it
    requires: tuple[str, ...] = ()       # import names needed to export and run
    packages: dict = {}                  # import name -> the package users install, where they differ ('_tools': 'MNN')
    dists: tuple[str, ...] = ()          # distributions whose version ``version()`` reports (default: ``requires``)
    options: tuple[Option, ...] = ()     # export options taken beyond COMMON_OPTIONS
    args: frozenset = frozenset()        # their names (derived from ``options``)
    precisions: tuple[str, ...] = ("fp32",)  # what it exports, its own first (derived from the options' precision)
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
    order: int = 1000                    # where it sits in tables and the benchmark matrix (smaller first)
    family: str = ""                     # a name shared with sibling formats ('tensorflow'): typed, it lists them

    def __init_subclass__(cls, **declared):
        super().__init_subclass__()
        for key, value in declared.items():
            if key.startswith("_") or not hasattr(Backend, key) or callable(getattr(Backend, key)):
                raise TypeError(f"{cls.__name__}: {key!r} is not a Backend declaration")
            setattr(cls, key, value)
        own = vars(cls)
        if "options" not in own and "args" in own:  # declared the old way: names of shared options
            cls.options = tuple(_shared_option(cls.__name__, a) for a in sorted(own["args"]))
        if "options" in own:
            cls.args = frozenset(o.name for o in cls.options)
            if "precisions" not in own:
                cls.precisions = ("fp32", *(o.precision for o in cls.options if o.precision))

    # -- availability --------------------------------------------------------------------------
    def missing(self) -> list[str]:
        """The ``requires`` import names that are not installed."""
        return [m for m in self.requires if importlib.util.find_spec(m.split(".")[0]) is None]

    def missing_detail(self, names: list[str] | None = None) -> str:
        """``missing X, Y`` for the messages: the missing import names (``names``, else ``missing()``) as users
        install them (``packages``: ``paddle`` is the ``paddlepaddle`` package), each once."""
        miss = self.missing() if names is None else names
        return f"missing {', '.join(dict.fromkeys(self.packages.get(m, m) for m in miss))}"

    def is_available(self) -> tuple[bool, str]:
        """Can this machine export this format? (False, one-line reason) if not."""
        if self.missing():
            return False, f"needs the '{self.extra}' extra ({self.missing_detail()})"
        return True, ""

    def runtime_available(self) -> tuple[bool, str]:
        """Can this machine run an artefact of this format? Defaults to is_available()."""
        return self.is_available()

    def require_export(self) -> None:
        if self.missing():
            raise MissingDependency(f"{self.title or self.name} export", self.extra, self.missing_detail())
        ok, why = self.is_available()
        if not ok:
            raise NotAvailable(f"cannot export {self.title or self.name} here: {why}")

    def require_runtime(self) -> None:
        if self.missing():
            raise MissingDependency(f"running {self.title or self.name} models", self.extra, self.missing_detail())
        ok, why = self.runtime_available()
        if not ok:
            raise NotAvailable(f"cannot run a {self.title or self.name} model here: {why}")

    # -- arguments ------------------------------------------------------------------------------
    def declared_options(self) -> dict[str, Option]:
        """name -> Option for everything this format's export takes: the common options, then its own."""
        return {o.name: o for o in (*COMMON_OPTIONS, *self.options)}

    @property
    def calibrates(self) -> bool:
        """Its INT8 calibrates activations on images (it takes --calib-images); else INT8 quantises weights only."""
        return CALIB_IMAGES in self.options

    def accepted_args(self) -> set[str]:
        return set(self.declared_options())

    def check_args(self, args: dict) -> None:
        """Refuse combinations this format does not take (raise ArgumentError). Called after defaults."""
        if args.get("half") and args.get("int8"):
            raise ArgumentError(f"{self.name}: choose one of --half and --int8")

    def refuse_unknown(self, given: dict) -> None:
        """One line naming the options this format does not take (set to anything but their default), and the ones
        it does."""
        declared = self.declared_options()
        bad = [k for k, v in given.items() if k not in declared and v not in (None, False, _default_of(k))]
        if bad:
            import difflib

            takes = ", ".join(o.flag for o in sorted(self.options, key=lambda o: o.name))
            near = difflib.get_close_matches(str(bad[0]), list(declared), n=1, cutoff=0.75)   # a typo: 'halff'
            raise ArgumentError(
                f"format '{self.name}' does not take {', '.join('--' + b.replace('_', '-') for b in bad)}"
                f" (it takes {takes or 'no format-specific options'}, plus --imgsz --batch --device)"
                + (f"; did you mean {declared[near[0]].flag}?" if near else "")
            )

    def resolve_args(self, given: dict) -> dict:
        """Validate user-given args (only those the user set) and fill defaults."""
        self.refuse_unknown(given)
        declared = self.declared_options()
        args = {k: o.default for k, o in declared.items()}
        args.update({k: declared[k].check(v) for k, v in given.items() if v is not None and k in declared})
        if args.get("device") is not None:
            from yolo_export.device import parse_device

            try:
                parse_device(args["device"])
            except YoloExportError as e:
                raise ArgumentError(str(e)) from None
        self.check_args(args)
        self.refuse_inapplicable(given, args)
        return args

    def refuse_inapplicable(self, given: dict, args: dict) -> None:
        """The one rule for an option the user set that would do nothing in this export (checked after
        ``check_args``, which may set the precision: the Edge TPU is int8 without --int8): one declared to apply to
        other precisions (``applies``: --calib-images without --int8), or a common calibration option (the common
        options that apply to int8 only) where this format's --int8 quantises the weights only."""
        prec = precision_of(args)
        declared = self.declared_options()
        for name, value in given.items():
            o = declared.get(name)
            if o is None or not o.applies or value is None or value is False:
                continue
            if prec not in o.applies:
                raise ArgumentError(_not_applying(o, prec))
            if o in COMMON_OPTIONS and o.applies == ("int8",) and not self.calibrates:
                raise ArgumentError(f"{self.name} --int8 quantises the weights only (no calibration): drop {o.flag}")

    # -- paths ----------------------------------------------------------------------------------
    def output_path(self, base: Path, args: dict) -> Path:
        """``base`` is the source path without suffix (``runs/x/best``), with ``default_output``'s tags."""
        return base.with_name(base.name + self.suffix)

    def recognise(self, path: Path) -> bool:
        """Is ``path`` an artefact of this format although its name does not say so (``-o ov64``)? By its files."""
        return bool(self.content) and path.is_dir() and all(any(path.glob(pat)) for pat in self.content)

    def foreign_files(self, path: Path, show: int = 3) -> list[str]:
        """Up to ``show`` files (or links) under the folder ``path`` that no export of this format writes."""
        import fnmatch

        globs = self.writes or (*self.content, "metadata.yaml")
        found = []
        for root, dirs, files in os.walk(path):
            for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                rel = Path(root, name).relative_to(path).as_posix()
                if os.path.islink(os.path.join(root, name)) or not any(
                        fnmatch.fnmatchcase(rel, g) and ("/" in g or "/" not in rel) for g in globs):
                    found.append(rel)
                    if len(found) >= show:
                        return found
        return found

    def matches(self, path: Path) -> bool:
        name = path.name.rstrip("/")
        if self.is_dir:
            return path.is_dir() and name.endswith(self.suffix)
        return bool(self.suffix) and name.endswith(self.suffix) and not path.is_dir()

    # -- the work -------------------------------------------------------------------------------
    def export(self, ctx: ExportContext) -> Path:  # pragma: no cover - interface
        raise NotImplementedError

    def cpu_only(self, device) -> None:
        """For a runtime that runs on the CPU here: one warning when ``device`` asked for something else."""
        if str(device or "cpu") not in ("cpu", "CPU"):
            from yolo_export.utils import LOGGER

            LOGGER.warning(f"warning: {self.title or self.name} runs on the CPU here (asked for {device})")

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
        """The backend library's version, for reports: the first of ``dists`` (else ``requires``) installed."""
        from importlib.metadata import PackageNotFoundError, version

        for dist in self.dists or self.requires:
            try:
                return version(dist)
            except (PackageNotFoundError, ValueError):
                continue
        return None

    def __repr__(self):
        return f"<Backend {self.name}>"


def _default_of(name: str):
    try:
        return option(name).default
    except KeyError:
        return None


def _shared_option(owner: str, name: str) -> Option:
    """The declared option behind an export arg named the old way (``args = frozenset({"half"})``)."""
    for o in (*SHARED_OPTIONS, *(o for b in _REGISTRY.values() for o in b.options)):
        if o.name == name:
            return o
    raise TypeError(f"{owner}: export arg {name!r} has no declared Option; list it in 'options' "
                    f"(yolo_export.registry.Option)")


def export_options() -> dict[str, tuple[Option, list[str]]]:
    """Every export option the registered formats take: name -> (its declaration, the formats that take it; empty
    for the common ones), common options first, then in registry order. The CLI's export flags come from here."""
    out: dict[str, tuple[Option, list[str]]] = {o.name: (o, []) for o in COMMON_OPTIONS}
    for b in all_backends():
        for o in b.options:
            out.setdefault(o.name, (o, []))[1].append(b.name)
    return out


def option(name: str) -> Option:
    """The declaration of option ``name`` (common, shared, or a registered format's own)."""
    with contextlib.suppress(KeyError):
        return options.common(name)
    found = export_options().get(name)
    if found is None:
        raise KeyError(name)
    return found[0]


def recorded_args(args: dict) -> dict:
    """The export args an artefact records in its metadata's ``args``: those of options declared ``recorded``."""
    opts = export_options()
    return {k: v for k, v in args.items()
            if k in opts and opts[k][0].recorded and (v is None or isinstance(v, (bool, int, float, str)))}


def option_conflicts(backend: Backend) -> list[str]:
    """Options of ``backend`` that clash with another registered format's option of the same name (another type,
    default, range, choices or precision): one flag cannot be both; and options that would shadow the export
    command's own parameters or another option's short flag (``-f``, ``-o``)."""
    known = export_options()
    shorts = {o.short: o.name for o, _ in known.values() if o.short}
    out = []
    for o in backend.options:
        first = known.get(o.name, (o, []))[0]
        if (first.type, first.default) != (o.type, o.default):
            out.append(f"{o.flag} ({o.type.__name__}, default {o.default!r}) is already declared as "
                       f"{first.type.__name__}, default {first.default!r}")
        elif (first.range, first.choices, first.precision) != (o.range, o.choices, o.precision):
            out.append(f"{o.flag} is already declared with another range, choices or precision")
        if o.name in options.RESERVED_NAMES:
            out.append(f"{o.flag} is a parameter of the export command itself")
        if o.short in options.RESERVED_SHORTS:
            out.append(f"{o.flag}'s short flag {o.short} is the export command's own")
        elif o.short and shorts.get(o.short, o.name) != o.name:
            out.append(f"{o.flag}'s short flag {o.short} is already --{shorts[o.short].replace('_', '-')}'s")
    return out


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


def builtin_modules() -> list[str]:
    """The built-in backends are the modules of the ``yolo_export.backends`` package (``backends/`` in the source
    tree): every module whose name does not start with ``_``. Adding a format = adding its file there."""
    import pkgutil

    package = importlib.import_module("yolo_export.backends")
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for mod in builtin_modules():
        importlib.import_module(f"yolo_export.backends.{mod}")
    ordered = sorted(_REGISTRY.values(), key=lambda b: b.order)  # stable: a module's formats keep their order
    _REGISTRY.clear()
    _REGISTRY.update((b.name, b) for b in ordered)
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
            clash = option_conflicts(inst)
            if clash:
                raise YoloExportError(f"its option {clash[0]}")
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


def families_of() -> dict[str, list[str]]:
    """Family names people type (``tensorflow``), declared by the formats (``family=``): name -> its formats."""
    out: dict[str, list[str]] = {}
    for b in all_backends():
        if b.family:
            out.setdefault(b.family, []).append(b.name)
    return out


def get(fmt: str) -> Backend:
    _load_all()
    key = str(fmt).lower().strip().lstrip(".")
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    from yolo_export.utils import nearest

    families = families_of()
    fam = families.get(key) or families.get(key.replace("_", "-"))
    if fam:
        raise ArgumentError(f"'{fmt}' is a family of formats: choose one of {', '.join(fam)} "
                            f"(e.g. --format {fam[0]})")
    guess = nearest(key, list(_REGISTRY) + list(_ALIASES) + list(families))
    guess = families[guess][0] if guess in families else _ALIASES.get(guess, guess) if guess else None
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
        import glob

        near = sorted(glob.glob(glob.escape(str(p)) + ".*"))[:3]   # 'models/best' for 'models/best.pt'
        raise FileError(f"model not found: {path}" + (f" (did you mean {' or '.join(near)}?)" if near else ""))
    if p.is_file() and p.stat().st_size == 0:
        raise FileError(f"{path} is empty (0 bytes), not a model: export it again")
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
    raise ArgumentError(
        f"cannot tell the format of {path} (known: "
        + ", ".join(f"{b.suffix}" + ("/" if b.is_dir else "") for b in _REGISTRY.values() if b.suffix)
        + ")"
    )


def machine_summary() -> dict:
    return {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version(),
            "cpu_count": os.cpu_count()}
