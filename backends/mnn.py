"""MNN (``.mnn``): converted from our ONNX export with the MNN package's converter, run with MNN's Python runtime.

fp32 (default), fp16 weights (``--half``, computed in fp32 at run time) and 8-bit weights (``--int8``: weight-only
quantisation, no calibration data needed). Metadata travels inside the model, as JSON in MNN's ``bizCode`` field.

The MNN wheel's Python converter (``MNN.tools``, also behind its ``mnnconvert`` console script) imports a telemetry
module that runs ``pip install`` of a logging SDK and contacts a remote server when it is imported. This backend
never imports ``MNN.tools``: it calls the converter in the compiled ``_tools`` extension directly, in a child
process (its C++ code prints to stdout, which must stay clean for ``--json``). Nothing is installed or fetched.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from yolo_export.errors import YoloExportError
from yolo_export.backends.onnx import SIMPLIFY
from yolo_export.registry import DYNAMIC, HALF, INT8, Backend, Runner, register

INPUT, OUTPUT = "images", "output0"
# The converter entry point in the compiled extension; argv[0] is the program name, the rest its options.
_CONVERT = "import sys, _tools; _tools.mnnconvert(sys.argv)"


@contextlib.contextmanager
def _stdout_to_stderr():
    """MNN's C++ code prints banners ('The device supports...', 'MNN use high precision') on fd 1; send them to
    stderr so that ``--json`` output stays one JSON document."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real fd 1 (embedded interpreters)
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _import_mnn():
    with _stdout_to_stderr():
        import MNN
        import MNN.expr  # noqa: F401
        import MNN.nn  # noqa: F401
    return MNN


def convert(args: list[str], what: str) -> str:
    """Run MNN's converter (compiled extension) in a child process; raise with its last lines on failure."""
    cmd = [sys.executable, "-c", _CONVERT, "MNNConvert", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    log = (r.stdout or "") + (r.stderr or "")
    if r.returncode != 0 or "Converted Success" not in log:
        tail = " | ".join(line.strip() for line in log.strip().splitlines()[-3:])
        raise YoloExportError(f"MNN converter failed on {what} (exit {r.returncode}): {tail or 'no output'}")
    return log


def biz_code(meta: dict) -> str:
    from yolo_export.metadata import encode

    return json.dumps(encode(meta), ensure_ascii=True, sort_keys=True)


class MNNRunner(Runner):
    """An MNN module on the CPU (``precision: high`` = fp32 compute; ``threads``: numThread)."""

    def __init__(self, path, threads: int | None = None):
        MNN = _import_mnn()
        self.F = MNN.expr
        from yolo_export.threads import resolve

        self.threads = n = resolve(threads)
        check_loads(path)
        self.module = _module(MNN, path, n)
        self.device = "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        F = self.F
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = self.module.forward(F.const(x, list(x.shape), F.NCHW))
        return np.array(F.convert(y, F.NCHW).read(), dtype=np.float32)


def _module(MNN, path, threads: int):
    """The model as an MNN module on the CPU (``precision: high`` = fp32 compute)."""
    cfg = {"backend": "CPU", "precision": "high", "numThread": threads}
    with _stdout_to_stderr():
        rt = MNN.nn.create_runtime_manager((cfg,))
        return MNN.nn.load_module_from_file(str(path), [INPUT], [OUTPUT], runtime_manager=rt)


def check_loads(path) -> None:
    """MNN reads its FlatBuffer without verifying it: a damaged offset or length (e.g. a size field raised to 2**31)
    makes it read out of bounds and take the process down. So the module is first loaded and run once on a blank
    input in a child process; a crash, a hang or a failure there is one FileError line."""
    from yolo_export.isolation import try_in_child

    try_in_child(_try_module, str(path), [Path(path)], "an MNN model")


def _try_module(path: str, report) -> bool:
    """In the child (``check_loads``): load the module, read its info, run one blank input of its input shape."""
    MNN = _import_mnn()
    F = MNN.expr
    module = _module(MNN, path, 1)
    with _stdout_to_stderr():
        info = module.get_info()
        shape = [int(d) for d in info["inputs"][0].shape] if info.get("inputs") else []
        if len(shape) == 4 and all(d > 0 for d in shape[1:]):
            shape[0] = max(shape[0], 1)
            y = module.forward(F.const(np.zeros(shape, np.float32), shape, F.NCHW))
            F.convert(y, F.NCHW).read()
    return True


@register
class MNNBackend(Backend, name="mnn", title="MNN", order=100, suffix=".mnn", extra="mnn", builds_on="onnx",
                 requires=("MNN", "_tools", "onnx", "onnxruntime"), packages={"_tools": "MNN"},  # its converter
                 options=(HALF, INT8, DYNAMIC, SIMPLIFY)):

    def runtime_available(self):
        from importlib.util import find_spec

        if find_spec("MNN") is None:
            return False, "needs the 'mnn' extra (missing MNN)"
        return True, ""

    def require_runtime(self) -> None:
        from yolo_export.errors import MissingDependency

        ok, why = self.runtime_available()
        if not ok:
            raise MissingDependency("running MNN models", self.extra, "missing MNN")

    def check_args(self, args):
        super().check_args(args)
        if str(args.get("device") or "cpu") not in ("cpu", "CPU"):
            from yolo_export.errors import ArgumentError

            raise ArgumentError("mnn exports and runs on the CPU here; drop --device")

    def export(self, ctx):
        onnx_path = ctx.build("onnx", half=False, int8=False, dynamic=bool(ctx.args.get("dynamic")),
                              simplify=ctx.args.get("simplify", True))
        out = ctx.workdir / f"{ctx.stem}.mnn"
        if ctx.args.get("dynamic"):
            ctx.metadata.setdefault("args", {})["dynamic"] = True
        opts = ["-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(out),
                "--bizCode", biz_code(ctx.metadata)]
        if ctx.args.get("half"):
            opts.append("--fp16")
        elif ctx.args.get("int8"):
            opts += ["--weightQuantBits", "8"]
        convert(opts, str(onnx_path.name))
        return out

    def load(self, path, device, metadata, threads=None):
        self.cpu_only(device)
        return MNNRunner(path, threads=threads)

    def write_metadata(self, path: Path, meta):
        """Rewrite ``bizCode`` by an MNN -> MNN conversion without graph optimisation (weights are kept as they
        are: fp16 and 8-bit weights stay so), into a temporary name, then renamed over the model."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.meta-tmp.mnn")
        try:
            convert(["-f", "MNN", "--modelFile", str(path), "--MNNModel", str(tmp), "--bizCode", biz_code(meta),
                     "--optimizeLevel", "0"], path.name)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    def read_metadata(self, path):
        from yolo_export.limits import loads_json
        from yolo_export.metadata import decode

        MNN = _import_mnn()
        check_loads(path)
        with _stdout_to_stderr():
            info = MNN.nn.load_module_from_file(str(path), [], []).get_info()
        raw = info.get("bizCode") or ""
        try:
            data = loads_json(raw, "bizCode metadata", path)
        except ValueError:
            return {}
        return decode(data, path) if isinstance(data, dict) else {}
