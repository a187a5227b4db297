"""TensorRT (``.engine``): ONNX -> TensorRT engine with the official ``tensorrt`` Python API; runs on an NVIDIA GPU.

The ONNX it builds on comes from the ONNX backend through the registry (``ctx.build("onnx", ...)``). Builds take
fp32, fp16 (``--half``), INT8 (``--int8``, entropy calibration on ``--data`` with a calibration cache), a dynamic
batch (one optimisation profile: min 1, opt ``max(1, batch // 2)``, max ``batch``), ``--workspace`` in GiB and a
timing cache kept in the user cache dir. fp32 engines are built with TF32 off (TensorRT turns it on by default), so
that they hold the fp32 tolerance on Ampere and later GPUs; the header records the TF32 setting of every build.

File layout (the common convention for YOLO engines): a 4-byte little-endian length, that many bytes of UTF-8 JSON
metadata, then the serialized engine. The header records the full TensorRT version (with the build number) and the
GPU that built the engine; the runner refuses, in one line, an engine that this TensorRT or this GPU cannot run.

Versions: the ``tensorrt`` extra pins TensorRT 10 (``>=10,<11``). TensorRT 11 removed the implicit-precision API
(``BuilderFlag.FP16/INT8``, the calibrators, ``int8_calibrator``, ``set_calibration_profile``); with a TensorRT 11
installed some other way, ``--half`` builds a strongly typed network from the fp16 ONNX and ``--int8`` is refused
in one line before any work (11 takes only explicitly quantised Q/DQ graphs with symmetric int8 activations, which
the ONNX INT8 path does not produce: it quantises activations asymmetrically to uint8 for ONNX Runtime).

TensorRT's messages go through one shared logger per process into the project's logging (stderr), never to stdout.
Availability: no NVIDIA GPU is :class:`NotAvailable`; a GPU without a working ``tensorrt`` >= 10 is
:class:`MissingDependency` (the NotAvailable that ``pip install`` fixes); both carry ``is_available()``'s reason.
Nothing here imports ``tensorrt`` (or asks CUDA anything) at module import time.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yolo_export.errors import ArgumentError, FileError, MissingDependency, NotAvailable, YoloExportError
from yolo_export.metadata import to_json
from yolo_export.registry import CALIB_IMAGES, DYNAMIC, HALF, INT8, Backend, Option, Runner, register

HEADER_LEN = struct.Struct("<I")          # 4-byte little-endian length of the JSON header
MAX_HEADER = 16 << 20                     # a header larger than this is not ours
TRT_KEY = "tensorrt"                      # header key with the build's TensorRT version and GPU
INSTALL_HINT = 'pip install "yolo-export[tensorrt]"'
MIN_MAJOR = 10                            # the API this module is written to


# ----------------------------------------------------------------------------------------- header (no TensorRT)
def encode_header(meta: dict) -> bytes:
    """Metadata -> length prefix + UTF-8 JSON. Values stay JSON-native (a reader of this convention parses JSON)."""
    body = to_json(meta, ensure_ascii=False, sort_keys=False).encode("utf-8")
    if len(body) > MAX_HEADER:
        raise YoloExportError(f"engine metadata is too large ({len(body)} bytes)")
    return HEADER_LEN.pack(len(body)) + body


def read_header(path: str | Path) -> tuple[dict, int]:
    """(metadata, offset of the engine bytes). ({}, 0) for an engine without our header (e.g. built by trtexec)."""
    from yolo_export.limits import loads_json

    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(HEADER_LEN.size)
        if len(head) < HEADER_LEN.size:
            raise FileError(f"{path} is not a TensorRT engine (only {size} bytes)")
        (n,) = HEADER_LEN.unpack(head)
        if n == 0 or n > MAX_HEADER or n > size - HEADER_LEN.size:
            return {}, 0
        body = f.read(n)
    if body[:1] != b"{":
        return {}, 0
    try:
        meta = loads_json(body.decode("utf-8"), "engine metadata header", path)  # nesting checked first
    except (UnicodeDecodeError, ValueError):
        return {}, 0
    if not isinstance(meta, dict):
        return {}, 0
    return meta, HEADER_LEN.size + n


def write_engine(path: str | Path, meta: dict, engine: bytes | memoryview) -> Path:
    """Write header + engine to ``path`` atomically (temp file beside it, then rename)."""
    from yolo_export.utils import atomic_write_bytes

    return atomic_write_bytes(path, encode_header(meta) + bytes(engine))


def rewrite_header(path: str | Path, meta: dict) -> Path:
    """Replace the header of an existing engine file atomically; the engine bytes are copied unchanged."""
    path = Path(path)
    old, offset = read_header(path)
    if TRT_KEY in old and TRT_KEY not in meta:
        meta = {**meta, TRT_KEY: old[TRT_KEY]}       # build facts stay with the engine they describe
    header = encode_header(meta)

    def fill(dst):
        dst.write(header)
        with open(path, "rb") as src:
            src.seek(offset)
            shutil.copyfileobj(src, dst, 1 << 20)

    from yolo_export.utils import atomic_write

    return atomic_write(path, fill)


def _version_tuple(v: str | None) -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", str(v or "")))


def compat_problem(built: dict | None, installed_version: str, gpu_name: str | None = None,
                   capability: str | None = None) -> str | None:
    """One line saying why this TensorRT / GPU cannot run an engine built as ``built``; None when it can.

    An engine runs only with the TensorRT release that built it, to the build number (``10.13.0.35``), and on the
    GPU architecture that built it."""
    built = built or {}
    bv = built.get("version")
    if bv and _version_tuple(bv) != _version_tuple(installed_version):
        return (f"this engine was built with TensorRT {bv} but TensorRT {installed_version} is installed; an engine "
                f"runs only with the TensorRT release (to the build number) that built it: export it again on this "
                f"machine, or install tensorrt=={bv}")
    bc = built.get("compute_capability")
    if bc and capability and str(bc) != str(capability):
        return (f"this engine was built for a GPU of compute capability {bc} ({built.get('gpu') or 'unknown GPU'}) "
                f"but this GPU ({gpu_name or 'unknown'}) is {capability}; export it again on this GPU")
    return None


# ----------------------------------------------------------------------------------------- build plan (no TensorRT)
@dataclass
class BuildPlan:
    """Everything the engine build needs, decided before TensorRT is touched."""

    onnx: Path
    input_name: str
    output_name: str
    chw: tuple[int, int, int]
    dynamic: bool
    batch: int
    precision: str                                     # fp32 | fp16 | int8
    workspace_bytes: int | None = None
    profile: dict = field(default_factory=dict)        # {"min": shape, "opt": shape, "max": shape}
    trt_profile: object = None                         # TensorRT's optimisation profile, once configured

    @property
    def calib_batch(self) -> int:
        """Calibration runs at the profile's opt shape (dynamic) or the engine's fixed batch."""
        return int(self.profile["opt"][0]) if self.dynamic else int(self.batch)


def profile_shapes(batch: int, chw: tuple[int, int, int]) -> dict:
    """min 1, opt max(1, batch // 2), max batch."""
    batch = max(1, int(batch))
    return {"min": (1, *chw), "opt": (max(1, batch // 2), *chw), "max": (batch, *chw)}


def workspace_bytes(gib) -> int | None:
    return None if gib in (None, 0) else int(float(gib) * (1 << 30))


def calibration_batches(images: np.ndarray, batch: int) -> list[np.ndarray]:
    """Split calibration images into full batches of ``batch``; a short last batch is padded by repeating images."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    if len(images) == 0:
        raise YoloExportError("INT8 calibration needs at least one image")
    out = []
    for i in range(0, len(images), batch):
        b = images[i:i + batch]
        if len(b) < batch:
            b = np.concatenate([b, np.resize(images, (batch - len(b), *images.shape[1:]))])
        out.append(np.ascontiguousarray(b))
    return out


class CalibrationData:
    """The data side of an INT8 calibrator: batches and a calibration cache file keyed by what it depends on."""

    def __init__(self, images: np.ndarray, batch: int, onnx_path: str | Path, algorithm: str = "entropy2",
                 cache_dir: str | Path | None = None):
        self.batches = calibration_batches(images, batch)
        self.batch = int(batch)
        self.index = 0
        h = hashlib.sha256()
        h.update(Path(onnx_path).read_bytes())
        h.update(np.ascontiguousarray(images, dtype=np.float32).tobytes())
        h.update(f"{batch}:{algorithm}".encode())
        from yolo_export.utils import cache_dir as user_cache

        root = Path(cache_dir) if cache_dir else user_cache() / "tensorrt"
        self.cache_path = root / f"calib-{algorithm}-{h.hexdigest()[:16]}.cache"

    def next_batch(self) -> np.ndarray | None:
        if self.index >= len(self.batches):
            return None
        b = self.batches[self.index]
        self.index += 1
        return b

    def read_cache(self) -> bytes | None:
        try:
            data = self.cache_path.read_bytes()
        except OSError:
            return None
        return data or None

    def write_cache(self, data) -> None:
        from yolo_export.utils import atomic_write_bytes

        try:
            atomic_write_bytes(self.cache_path, bytes(data))
        except OSError as e:  # a cache we cannot write must not fail the export
            from yolo_export.utils import LOGGER

            LOGGER.debug(f"could not write the calibration cache {self.cache_path}: {e}")


def timing_cache_path(trt_version: str, gpu_name: str) -> Path:
    from yolo_export.utils import cache_dir

    tag = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{trt_version}-{gpu_name}")
    return cache_dir() / "tensorrt" / f"timing-{tag}.cache"


# ----------------------------------------------------------------------------------------- machine checks
def _gpu_state() -> tuple[bool, str]:
    """(usable CUDA GPU?, detail). Asks torch, the core dependency that owns CUDA here."""
    import torch

    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return False, "no usable NVIDIA GPU (torch.cuda.is_available() is False)"
    return True, ""


@functools.lru_cache(maxsize=1)
def _trt_or_problem():
    """(the tensorrt module, None) or (None, one line saying why it is not usable). Imported once per process."""
    try:
        import tensorrt as trt
    except ImportError as e:
        return None, f"tensorrt is not installed ({e})"
    except OSError as e:  # the front package installed without its libraries
        return None, f"tensorrt is installed but its libraries did not load ({e})"
    v = getattr(trt, "__version__", "")
    if not _version_tuple(v) or _version_tuple(v)[0] < MIN_MAJOR:
        return None, f"tensorrt {v or '(unknown version)'} is installed; this needs TensorRT {MIN_MAJOR} or later"
    return trt, None


def _import_trt():
    trt, problem = _trt_or_problem()
    if problem:
        raise MissingDependency("TensorRT", "tensorrt", problem)
    return trt


def implicit_precision(trt) -> bool:
    """TensorRT 10 takes the FP16/INT8 builder flags and the calibrators; 11 removed them (strong typing only)."""
    return hasattr(trt.BuilderFlag, "FP16") and hasattr(trt, "IInt8EntropyCalibrator2")


def fp16_from_onnx() -> bool:
    """Whether ``--half`` builds on an fp16 ONNX (TensorRT 11+, strongly typed) rather than on the fp32 ONNX with the
    FP16 builder flag (TensorRT 10, the pinned major; also what is planned where no TensorRT imports)."""
    trt, _ = _trt_or_problem()
    return trt is not None and not implicit_precision(trt)


def int8_problem(trt) -> str | None:
    """Why ``--int8`` cannot be built with this TensorRT (None when it can)."""
    if implicit_precision(trt) and hasattr(trt.BuilderFlag, "INT8"):
        return None
    return (f"TensorRT {trt.__version__} removed implicit INT8 calibration (the calibrators and BuilderFlag.INT8); "
            f"--int8 engines need TensorRT 10: pip install \"tensorrt>=10,<11\" (or use --half)")


# ----------------------------------------------------------------------------------------- logging
_LOGGER = None
_LEVELS = {"INTERNAL_ERROR": logging.ERROR, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
           "INFO": logging.DEBUG, "VERBOSE": logging.DEBUG}


def trt_logger(trt):
    """The one TensorRT logger of this process, given to every Builder, Runtime and OnnxParser.

    TensorRT's default ``trt.Logger`` prints to stdout (which breaks ``--json``), and a second logger while a builder
    or runtime lives makes TensorRT warn that it differs. This one routes TensorRT's messages into the project's
    logging on stderr: warnings as warnings, info and verbose as debug (``--verbose`` shows them). Errors are kept
    (``last_error``) for the one-line message of the failure they cause, and shown with ``--verbose``."""
    global _LOGGER
    if _LOGGER is None or _LOGGER.trt is not trt:
        _LOGGER = _make_logger(trt)
    return _LOGGER


def _make_logger(trt):
    from yolo_export.utils import LOGGER

    class _RoutedLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.trt = trt
            self.last_error: str | None = None

        def log(self, severity, msg):
            try:  # an exception must never travel back into TensorRT's C++ caller
                name = getattr(severity, "name", str(severity)).rsplit(".", 1)[-1]
                level = _LEVELS.get(name, logging.WARNING)
                text = " ".join(str(msg).split())
                if level >= logging.ERROR:
                    self.last_error = text
                    level = logging.DEBUG        # the failure it causes carries it, in one line
                    text = f"error: {text}"
                if LOGGER.isEnabledFor(level):
                    LOGGER.log(level, f"warning: TensorRT: {text}" if level == logging.WARNING else f"TensorRT: {text}")
            except Exception:  # noqa: BLE001
                pass

        def take_error(self) -> str:
            err, self.last_error = self.last_error, None
            return f": {err}" if err else " (run with --verbose for TensorRT's log)"

    return _RoutedLogger()


def _gpu_facts(device) -> tuple[str, str]:
    import torch

    idx = torch.device(device).index or 0
    major, minor = torch.cuda.get_device_capability(idx)
    return torch.cuda.get_device_name(idx), f"{major}.{minor}"


def _is_cpu(device) -> bool:
    from yolo_export.device import parse_device

    return parse_device(device) in ("cpu", "mps")


# ----------------------------------------------------------------------------------------- runner
class TensorRTRunner(Runner):
    """Deserializes the engine and runs it: I/O bound by tensor name, on a torch CUDA stream."""

    def __init__(self, path, device, metadata: dict):
        import torch

        from yolo_export.device import select_device

        trt = _import_trt()
        self.torch, self.trt = torch, trt
        self.dev = select_device("cuda:0" if _is_cpu(device) else device)
        self.device = str(self.dev)
        header, offset = read_header(path)
        name, cap = _gpu_facts(self.dev)
        problem = compat_problem(header.get(TRT_KEY), trt.__version__, name, cap)
        if problem:
            raise NotAvailable(problem)
        with open(path, "rb") as f:
            f.seek(offset)
            blob = f.read()
        torch.cuda.set_device(self.dev)
        self.logger = trt_logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            built = (header.get(TRT_KEY) or {}).get("version", "an unknown version")
            raise NotAvailable(f"TensorRT {trt.__version__} could not deserialize {path} (built with TensorRT "
                               f"{built}); export it again on this machine{self.logger.take_error()}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise YoloExportError(f"{path}: expected one input and one output tensor, found {ins} -> {outs}")
        self.input_name, self.output_name = ins[0], outs[0]
        self.in_dtype = _torch_dtype(trt, torch, self.engine.get_tensor_dtype(self.input_name))
        self.out_dtype = _torch_dtype(trt, torch, self.engine.get_tensor_dtype(self.output_name))
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        if shape[0] == -1:
            _, _, mx = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.fixed_batch, self.max_batch = None, int(mx[0])
        else:
            self.fixed_batch = self.max_batch = int(shape[0])
        self.stream = torch.cuda.Stream(device=self.dev)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) > self.max_batch:
            return np.concatenate([self(x[i:i + self.max_batch]) for i in range(0, len(x), self.max_batch)])
        torch = self.torch
        ctx = self.context
        with torch.cuda.stream(self.stream):
            inp = torch.from_numpy(np.ascontiguousarray(x)).to(self.dev, self.in_dtype, non_blocking=True)
            if not ctx.set_input_shape(self.input_name, tuple(inp.shape)):
                raise YoloExportError(f"this engine does not take a batch of shape {tuple(inp.shape)}"
                                      f"{self.logger.take_error()}")
            out = torch.empty(tuple(ctx.get_tensor_shape(self.output_name)), dtype=self.out_dtype, device=self.dev)
            ctx.set_tensor_address(self.input_name, int(inp.data_ptr()))
            ctx.set_tensor_address(self.output_name, int(out.data_ptr()))
            if not ctx.execute_async_v3(self.stream.cuda_stream):
                raise YoloExportError(f"TensorRT execution failed{self.logger.take_error()}")
            result = out.float().cpu()      # D2H on this stream; .cpu() waits for it
        self.stream.synchronize()
        return result.numpy()

    def close(self):
        for a in ("context", "engine", "runtime"):
            if hasattr(self, a):
                delattr(self, a)


def _torch_dtype(trt, torch, dt):
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8}
    if dt not in table:
        raise YoloExportError(f"unsupported engine I/O dtype {dt}")
    return table[dt]


# ----------------------------------------------------------------------------------------- calibrator
def make_calibrator(trt, data: CalibrationData, device, algorithm: str = "entropy2"):
    """An IInt8EntropyCalibrator2 (or MinMax) that feeds ``data`` from one CUDA buffer and keeps the cache."""
    import torch

    base = {"entropy2": trt.IInt8EntropyCalibrator2, "minmax": trt.IInt8MinMaxCalibrator}[algorithm]

    class _Calibrator(base):
        def __init__(self):
            base.__init__(self)
            self.data = data
            self.buffer = torch.empty(data.batches[0].shape, dtype=torch.float32, device=device)

        def get_batch_size(self):
            return self.data.batch

        def get_batch(self, names):
            b = self.data.next_batch()
            if b is None:
                return None
            self.buffer.copy_(torch.from_numpy(b))
            torch.cuda.current_stream(self.buffer.device).synchronize()
            return [int(self.buffer.data_ptr())]

        def read_calibration_cache(self):
            return self.data.read_cache()

        def write_calibration_cache(self, cache):
            self.data.write_cache(cache)

    return _Calibrator()


# ----------------------------------------------------------------------------------------- backend
WORKSPACE = Option("workspace", float, None, "TensorRT builder workspace in GiB.", range=(1e-3, 1024.0, "GiB"),
                   recorded=True)


@register
class TensorRTBackend(Backend, name="engine", aliases=("tensorrt", "trt"), title="TensorRT", order=90,
                      suffix=".engine", extra="tensorrt", requires=("tensorrt",), builds_on="onnx",
                      options=(HALF, INT8, DYNAMIC, WORKSPACE, CALIB_IMAGES),
                      tolerance={"fp32": (1e-3, 1.0), "fp16": (1e-2, 0.99), "int8": (None, 0.5)}):
    calibrator = "entropy2"

    # -- availability: no GPU is the more fundamental problem, so it leads; both are named when both are missing
    def _problem(self) -> NotAvailable | None:
        """Why this machine cannot build or run engines, as the error to raise; None when it can.

        No usable NVIDIA GPU: NotAvailable. A GPU but no working TensorRT >= 10 (not installed, libraries missing,
        too old): MissingDependency, the NotAvailable that ``pip install`` fixes. ``tensorrt`` is imported only
        where there is a GPU (it is what tells a broken install from a working one)."""
        gpu_ok, gpu_why = _gpu_state()
        if not gpu_ok:
            gpu = f"an NVIDIA GPU ({gpu_why}; it needs the NVIDIA driver and a CUDA build of torch)"
            if self.missing():
                return NotAvailable(f"TensorRT needs {gpu} and the 'tensorrt' extra (not installed: {INSTALL_HINT})")
            return NotAvailable(f"TensorRT needs {gpu}")
        _, problem = _trt_or_problem()
        return MissingDependency("TensorRT", self.extra, problem) if problem else None

    def is_available(self):
        err = self._problem()
        return (False, str(err)) if err else (True, "")

    def require_export(self):
        self._require("export")

    def require_runtime(self):
        self._require("run")

    def _require(self, what: str):
        """Raise the availability problem; its message carries ``is_available()``'s reason word for word."""
        err = self._problem()
        if isinstance(err, MissingDependency):
            raise err
        if err:
            raise NotAvailable(f"cannot {what} a TensorRT engine here: {err}")

    # -- arguments
    def check_args(self, args):
        super().check_args(args)
        if _is_cpu(args.get("device")):
            ok, _ = self.is_available()
            if not ok:
                self.require_export()
            raise ArgumentError(f"engine: TensorRT builds and runs on an NVIDIA GPU; use --device 0 "
                                f"(not --device {args.get('device')})")
        if args.get("int8"):
            if self.is_available()[0]:          # refuse before any work when this TensorRT has no INT8 path
                problem = int8_problem(_import_trt())
                if problem:
                    raise NotAvailable(problem)

    def resolve_args(self, given):
        given = dict(given)
        if given.get("device") in (None, ""):
            given["device"] = "0"          # an engine is built on, and for, a GPU
        args = super().resolve_args(given)
        if args.get("dynamic") and int(args["batch"]) == 1:
            from yolo_export.utils import LOGGER

            LOGGER.warning("warning: engine --dynamic with --batch 1 gives a profile of batch 1 only; "
                           "pass --batch N for the largest batch the engine should take")
        return args

    # -- the work
    def plan(self, ctx) -> BuildPlan:
        """Build the ONNX this engine starts from (through the registry) and decide shapes and precision."""
        import onnx

        from yolo_export.backends.onnx import INPUT, OUTPUT

        dynamic = bool(ctx.args.get("dynamic"))
        half_onnx = bool(ctx.args.get("half")) and fp16_from_onnx()
        path = ctx.build("onnx", dynamic=dynamic, half=half_onnx, simplify=True)
        graph = onnx.load(str(path), load_external_data=False).graph
        inp = graph.input[0]
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim]
        chw = tuple(int(d) for d in dims[1:])
        batch = int(ctx.args.get("batch") or 1)
        plan = BuildPlan(onnx=Path(path), input_name=inp.name or INPUT, output_name=graph.output[0].name or OUTPUT,
                         chw=chw, dynamic=dynamic, batch=batch, precision=ctx.precision,
                         workspace_bytes=workspace_bytes(ctx.args.get("workspace")))
        if dynamic:
            if dims[0] != -1:
                raise YoloExportError(f"the ONNX built for a dynamic engine has a fixed batch ({dims[0]})")
            plan.profile = profile_shapes(batch, chw)
        return plan

    def export(self, ctx):
        from yolo_export.utils import LOGGER

        trt = _import_trt()
        if ctx.args.get("int8") and int8_problem(trt):
            raise NotAvailable(int8_problem(trt))
        plan = self.plan(ctx)
        gpu_name, capability = _gpu_facts(ctx.device)
        logger = trt_logger(trt)
        builder = trt.Builder(logger)
        strong = not implicit_precision(trt)
        flags = 0
        if strong and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(plan.onnx)):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise YoloExportError(f"TensorRT's ONNX parser refused the model: {errs or 'no details'}")
        config, facts = self.configure(trt, builder, plan, capability, strong)
        calib = self._attach_calibrator(trt, ctx, config, plan, capability) if plan.precision == "int8" else None

        tc_path = timing_cache_path(trt.__version__, gpu_name)
        self._load_timing_cache(config, tc_path)
        LOGGER.info(f"building the TensorRT {trt.__version__} engine ({plan.precision}, TF32 "
                    f"{'on' if facts['tf32'] else 'off'}) on {gpu_name}...")
        serialized = builder.build_serialized_network(network, config)
        del calib                                  # the calibrator lives until the build is over
        if serialized is None:
            raise YoloExportError(f"TensorRT could not build the engine{logger.take_error()}")
        self._save_timing_cache(config, tc_path)

        meta = dict(ctx.metadata)
        meta[TRT_KEY] = {"version": trt.__version__, "gpu": gpu_name, "compute_capability": capability,
                         "precision": plan.precision, "dynamic": plan.dynamic,
                         "profile": {k: list(v) for k, v in plan.profile.items()} or None,
                         "workspace_gib": ctx.args.get("workspace"), **facts}
        ctx.metadata[TRT_KEY] = meta[TRT_KEY]
        out = ctx.workdir / f"{ctx.stem}.engine"
        write_engine(out, meta, memoryview(serialized))
        return out

    @staticmethod
    def configure(trt, builder, plan: BuildPlan, capability: str, strong: bool):
        """The builder config for ``plan``, and the facts about it that go into the header.

        fp32: TF32 cleared (TensorRT enables it by default; it rounds matmul/conv inputs to 10-bit mantissas on
        Ampere and later GPUs, which the fp32 tolerance does not allow). fp16/int8: TensorRT's default kept.
        A dynamic plan gets its optimisation profile (kept on ``plan.trt_profile`` for INT8 calibration)."""
        from yolo_export.utils import LOGGER

        config = builder.create_builder_config()
        if plan.workspace_bytes:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
        has_tf32 = hasattr(trt.BuilderFlag, "TF32")
        if plan.precision == "fp32" and has_tf32:
            config.clear_flag(trt.BuilderFlag.TF32)
        if plan.precision in ("fp16", "int8") and not strong:
            if _version_tuple(capability) < (5, 3):
                LOGGER.warning(f"warning: compute capability {capability} has no fast fp16; TensorRT may keep "
                               f"fp32 kernels")
            config.set_flag(trt.BuilderFlag.FP16)
        if plan.dynamic:
            plan.trt_profile = builder.create_optimization_profile()
            plan.trt_profile.set_shape(plan.input_name, plan.profile["min"], plan.profile["opt"], plan.profile["max"])
            config.add_optimization_profile(plan.trt_profile)
        tf32 = bool(config.get_flag(trt.BuilderFlag.TF32)) if has_tf32 else None
        return config, {"tf32": tf32, "strongly_typed": strong}

    def _attach_calibrator(self, trt, ctx, config, plan: BuildPlan, capability: str):
        """INT8 (TensorRT 10): entropy calibration on ``--data`` images (or generated ones), at the profile's opt."""
        from yolo_export.utils import LOGGER

        if _version_tuple(capability) < (6, 1):
            LOGGER.warning(f"warning: compute capability {capability} has no fast INT8; the engine may not be "
                           f"faster than fp16")
        if not ctx.args.get("data"):
            LOGGER.warning("warning: INT8 calibration without --data uses generated images; pass --data with "
                           "images like the ones the model will see")
        images = ctx.calibration_images()
        LOGGER.info(f"calibrating INT8 on {len(images)} images (batch {plan.calib_batch}, {self.calibrator})...")
        data = CalibrationData(images, plan.calib_batch, plan.onnx, self.calibrator)
        calib = make_calibrator(trt, data, ctx.device, self.calibrator)
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calib
        if plan.trt_profile is not None:
            config.set_calibration_profile(plan.trt_profile)
        return calib

    @staticmethod
    def _load_timing_cache(config, path: Path) -> None:
        from yolo_export.utils import LOGGER

        try:
            blob = path.read_bytes() if path.exists() else b""
            cache = config.create_timing_cache(blob)
            config.set_timing_cache(cache, ignore_mismatch=False)
        except Exception as e:  # noqa: BLE001 - a stale or unreadable cache only costs build time
            LOGGER.debug(f"timing cache {path} not used: {e}")
            with contextlib.suppress(Exception):
                config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    @staticmethod
    def _save_timing_cache(config, path: Path) -> None:
        from yolo_export.utils import LOGGER, atomic_write_bytes

        try:
            cache = config.get_timing_cache()
            if cache is not None:
                atomic_write_bytes(path, bytes(memoryview(cache.serialize())))
        except Exception as e:  # noqa: BLE001
            LOGGER.debug(f"timing cache not saved to {path}: {e}")

    def load(self, path, device, metadata):
        return TensorRTRunner(path, device, metadata)

    def write_metadata(self, path: Path, meta):
        rewrite_header(path, meta)

    def read_metadata(self, path):
        from yolo_export.metadata import decode

        meta, _ = read_header(path)
        return decode(meta, path) if meta else {}
