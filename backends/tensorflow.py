"""TensorFlow family: SavedModel, frozen GraphDef (.pb), TFLite (fp32 / fp16 / full-integer INT8) and Edge TPU.

One chain, each step reusing the previous backend through the registry:
ONNX (``ctx.build('onnx')``) -> SavedModel (onnx2tf) -> GraphDef / TFLite -> Edge TPU (and TF.js in ``tfjs.py``).

All conversions run in a child process (``_tf_worker``) with the network switched off; this process never imports
TensorFlow to export. Artefacts take NHWC float32 input (``layout = 'NHWC'``; LoadedModel transposes).
Metadata carriers: SavedModel ``metadata.yaml`` inside the directory; GraphDef a string constant node
``yolo_export_metadata`` inside the graph; TFLite a ``metadata.json`` in a zip archive appended to the flatbuffer
(the interpreter ignores trailing bytes, so the file stays runnable).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from yolo_export.errors import FileError, MetadataError, NotAvailable, YoloExportError
from yolo_export.metadata import encode
from yolo_export.registry import CALIB_IMAGES, HALF, INT8, Backend, Runner, register

TF_REQUIRES = ("tensorflow", "onnx2tf", "tf_keras", "onnx", "onnxruntime", "onnx_graphsurgeon", "sng4onnx",
               "sne4onnx", "psutil")
# The packages the extras leave out (they declare the full `tensorflow`): installed with --no-deps, as the README
# says; and the import names whose package is spelt otherwise.
NO_DEPS = {"onnx2tf": "onnx2tf", "tf_keras": "tf-keras", "tensorflow_hub": "tensorflow-hub",
           "tensorflowjs": "tensorflowjs"}
TF_PACKAGES = {**NO_DEPS, "tensorflow": "tensorflow-cpu", "onnx_graphsurgeon": "onnx-graphsurgeon",
               "ai_edge_litert": "ai-edge-litert"}
GRAPH_META_NODE = "yolo_export_metadata"
TFLITE_META = "metadata.json"
EDGETPU_INSTALL = ("install the Edge TPU compiler (x86-64 Linux: add Coral's apt repository "
                   "https://packages.cloud.google.com/apt coral-edgetpu-stable, then apt-get install edgetpu-compiler)")

# onnx2tf conversions done in this process, keyed by the ONNX graph (not its metadata): exporting the same model to
# several TF formats (or a benchmark matrix) converts once. Values are private copies, removed at exit.
_CONVERSIONS: dict[str, Path] = {}
_CACHE_ROOT: list[Path] = []


# ------------------------------------------------------------------------------------------ the child process
def run_worker(command: str, what: str, cwd: str | None = None, **kwargs) -> dict:
    """Run one conversion in ``_tf_worker`` (no network, quiet TF); one-line YoloExportError on failure."""
    from yolo_export.utils import LOGGER

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "0"),
               PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", "-1"))
    # make the child import the same yolo_export as this process (a checkout on sys.path, or the installed one)
    import yolo_export

    root = str(Path(yolo_export.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # the child may run in another directory: hand it absolute paths
    kwargs = {k: str(Path(v).resolve()) if isinstance(v, Path) else v for k, v in kwargs.items()}
    cmd = [sys.executable, "-m", "yolo_export.backends._tf_worker", command, json.dumps(kwargs)]
    LOGGER.debug(" ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if proc.returncode != 0:
        err = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR: ")]
        tail = err[-1][7:] if err else (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        LOGGER.debug(proc.stdout[-4000:] + "\n" + proc.stderr[-8000:])
        raise YoloExportError(f"{what} failed: {tail}")
    res = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(res[-1][7:]) if res else {}


def _nhwc_npy(ctx, name: str, n: int) -> Path:
    """Calibration / sample images (from --data, else generated) as an NHWC float32 .npy in the work dir."""
    x = ctx.calibration_images(n)
    p = ctx.workdir / name
    np.save(p, np.ascontiguousarray(x.transpose(0, 2, 3, 1)).astype(np.float32))
    return p


def _graph_key(onnx_path: Path) -> str:
    import onnx

    m = onnx.load(str(onnx_path))
    del m.metadata_props[:]
    h = hashlib.sha256(m.SerializeToString())
    return h.hexdigest()


def _cache_dir() -> Path:
    if not _CACHE_ROOT:
        import atexit

        d = Path(tempfile.mkdtemp(prefix="yolo-export-tf-"))
        atexit.register(shutil.rmtree, d, True)
        _CACHE_ROOT.append(d)
    return _CACHE_ROOT[0]


def _copytree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("metadata.yaml", "*.npy"))
    return dst


def _layout_meta(meta: dict) -> dict:
    meta = dict(meta)
    pp = dict(meta.get("preprocess") or {})
    pp["layout"] = "NHWC"
    meta["preprocess"] = pp
    return meta


# ------------------------------------------------------------------------------------------ SavedModel
def _import_tf():
    """Import TensorFlow for running a model, with its C++ start-up chatter off unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


class SavedModelRunner(Runner):
    def __init__(self, path, threads: int | None = None):
        from yolo_export.threads import tf_threads

        tf = _import_tf()
        self.threads = tf_threads(tf, threads)
        self.tf = tf
        self.model = tf.saved_model.load(str(path))
        self.fn = self.model.signatures["serving_default"]
        spec = self.fn.structured_input_signature[1]
        self.input_name = next(iter(spec))
        b = spec[self.input_name].shape[0]
        self.fixed_batch = int(b) if b is not None else None

    def __call__(self, x):
        out = self.fn(**{self.input_name: self.tf.constant(x)})
        return next(iter(out.values())).numpy()


def no_deps_detail(backend, names: list[str] | None) -> str:
    """``missing X, Y`` for a TensorFlow-family format, saying how the packages the extra leaves out go in."""
    miss = backend.missing() if names is None else names
    text = Backend.missing_detail(backend, miss)
    left_out = [NO_DEPS[m] for m in miss if m in NO_DEPS]
    if left_out:
        text += f"; then {', '.join(left_out)} with pip install --no-deps: README, 'The TensorFlow family'"
    return text


class _TFBase(Backend, extra="tensorflow", requires=TF_REQUIRES, dists=("tensorflow-cpu", "tensorflow"),
              layout="NHWC", family="tensorflow", packages=TF_PACKAGES):
    def missing_detail(self, names=None):
        return no_deps_detail(self, names)

    def require_runtime(self):
        if importlib_missing("tensorflow"):
            from yolo_export.errors import MissingDependency

            raise MissingDependency(f"running {self.title} models", self.extra, self.missing_detail(["tensorflow"]))


def importlib_missing(*mods: str) -> list[str]:
    import importlib.util

    return [m for m in mods if importlib.util.find_spec(m) is None]


@register
class SavedModelBackend(_TFBase, name="saved_model", aliases=("savedmodel", "tf"), title="TF SavedModel", order=70,
                        suffix="_saved_model", is_dir=True,
                        writes=("saved_model.pb", "saved_model.pbtxt", "fingerprint.pb", "variables/*", "assets/*",
                                "assets.extra/*", "*.tflite", "metadata.yaml")):

    def matches(self, path: Path) -> bool:
        return path.is_dir() and (path.name.endswith(self.suffix) or (path / "saved_model.pb").is_file())

    def export(self, ctx):
        from yolo_export.utils import LOGGER

        onnx_path = Path(ctx.build("onnx", half=False, int8=False, dynamic=False, simplify=True))
        key = _graph_key(onnx_path)
        out = ctx.workdir / f"{ctx.stem}_saved_model"
        cached = _CONVERSIONS.get(key)
        if cached is not None and (cached / "saved_model.pb").exists():
            LOGGER.debug(f"reusing this session's onnx2tf conversion of the same graph ({cached})")
        else:
            work = Path(tempfile.mkdtemp(prefix="onnx2tf-", dir=ctx.workdir))
            src = work / "model.onnx"          # onnx2tf rewrites its input: give it a copy
            shutil.copyfile(onnx_path, src)
            sample = _nhwc_npy(ctx, "onnx2tf_sample.npy", 20)
            LOGGER.info("converting ONNX -> TF SavedModel with onnx2tf (network off)...")
            run_worker("onnx2tf", "onnx2tf conversion", onnx=src, out=work / "saved_model", sample=sample,
                       cwd=str(work.resolve()))
            cached = _copytree(work / "saved_model", _cache_dir() / key)
            _CONVERSIONS[key] = cached
            shutil.rmtree(work, ignore_errors=True)
        _copytree(cached, out)
        self.write_metadata(out, _layout_meta(ctx.metadata))
        return out

    def load(self, path, device, metadata, threads=None):
        return SavedModelRunner(path, threads=threads)


# ------------------------------------------------------------------------------------------ GraphDef
class GraphDefRunner(Runner):
    def __init__(self, path, threads: int | None = None):
        from yolo_export.threads import tf_threads

        tf = _import_tf()
        self.threads = tf_threads(tf, threads)
        self.tf = tf
        gd = tf.compat.v1.GraphDef()
        gd.ParseFromString(Path(path).read_bytes())
        info = _graph_info(tf, gd)
        inputs, outputs = info.get("inputs"), info.get("outputs")
        if not inputs or not outputs:
            inputs = [f"{n.name}:0" for n in gd.node if n.op == "Placeholder"]
            used = {i.split(":")[0].lstrip("^") for n in gd.node for i in n.input}
            outputs = [f"{n.name}:0" for n in gd.node if n.name not in used and n.op not in ("Const", "NoOp")]
        keep = [n for n in gd.node if n.name != GRAPH_META_NODE]
        del gd.node[:]
        gd.node.extend(keep)

        def imported():
            tf.compat.v1.import_graph_def(gd, name="")

        wrapped = tf.compat.v1.wrap_function(imported, [])
        g = wrapped.graph
        self.fn = wrapped.prune(g.as_graph_element(inputs[0]), [g.as_graph_element(o) for o in outputs[:1]])
        shape = g.as_graph_element(inputs[0]).shape
        self.fixed_batch = int(shape[0]) if shape.rank and shape[0] is not None else None

    def __call__(self, x):
        return self.fn(self.tf.constant(x))[0].numpy()


def _graph_info(tf, gd) -> dict:
    for n in gd.node:
        if n.name == GRAPH_META_NODE:
            raw = tf.make_ndarray(n.attr["value"].tensor)
            raw = raw.item() if hasattr(raw, "item") else raw
            from yolo_export.limits import loads_json

            return loads_json(raw, "graph metadata node")
    return {}


@register
class GraphDefBackend(_TFBase, name="pb", aliases=("graphdef", "frozen_graph"), title="TF GraphDef", order=70,
                      suffix=".pb", builds_on="saved_model"):

    def matches(self, path: Path) -> bool:
        return super().matches(path) and path.name not in ("saved_model.pb", "fingerprint.pb")

    def export(self, ctx):
        sm = ctx.build("saved_model")
        out = ctx.workdir / f"{ctx.stem}.pb"
        blob = ctx.workdir / "pb-metadata.json"
        blob.write_text(json.dumps(encode(_layout_meta(ctx.metadata))))
        run_worker("pb", "frozen GraphDef conversion", saved_model=Path(sm), out=out, blob=blob, node=GRAPH_META_NODE)
        return out

    def load(self, path, device, metadata, threads=None):
        return GraphDefRunner(path, threads=threads)

    def write_metadata(self, path: Path, meta):
        tf = _import_tf()

        from yolo_export.utils import atomic_write_bytes

        from yolo_export.backends._tf_worker import add_metadata_node

        gd = tf.compat.v1.GraphDef()
        gd.ParseFromString(Path(path).read_bytes())
        info = _graph_info(tf, gd)
        info["metadata"] = encode(meta)
        add_metadata_node(tf, gd, GRAPH_META_NODE, json.dumps(info))
        atomic_write_bytes(path, gd.SerializeToString())

    def read_metadata(self, path):
        from yolo_export.metadata import decode

        tf = _import_tf()
        gd = tf.compat.v1.GraphDef()
        gd.ParseFromString(Path(path).read_bytes())
        return decode(_graph_info(tf, gd).get("metadata") or {}, path)


# ------------------------------------------------------------------------------------------ TFLite
def _interpreter_cls():
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter, tf.lite.experimental.load_delegate


class TFLiteRunner(Runner):
    def __init__(self, path, delegate: str | None = None, threads: int | None = None):
        Interpreter, load_delegate = _interpreter_cls()
        kw = {}
        if delegate:
            kw["experimental_delegates"] = [load_delegate(delegate)]
        from yolo_export.threads import resolve

        self.threads = resolve(threads)
        self.it = Interpreter(model_path=str(path), num_threads=self.threads, **kw)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]
        self.out = self.it.get_output_details()[0]
        self.fixed_batch = int(self.inp["shape"][0])

    def __call__(self, x):
        d = self.inp
        if d["dtype"] in (np.int8, np.uint8):
            scale, zero = d["quantization"]
            info = np.iinfo(d["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])
        self.it.set_tensor(d["index"], x)
        self.it.invoke()
        y = self.it.get_tensor(self.out["index"])
        if self.out["dtype"] in (np.int8, np.uint8):
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y


def tflite_model_bytes(data: bytes) -> bytes:
    """The flatbuffer without any appended metadata archive."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            if infos:
                return data[:min(i.header_offset for i in infos)]
    except zipfile.BadZipFile:
        pass
    return data


def tflite_embed(path: Path, meta: dict) -> None:
    """(Re)write the metadata archive appended to a .tflite, atomically."""
    from yolo_export.utils import atomic_write_bytes

    raw = tflite_model_bytes(Path(path).read_bytes())
    buf = io.BytesIO()
    buf.write(raw)
    with zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(TFLITE_META, json.dumps(encode(meta)))
    atomic_write_bytes(path, buf.getvalue())


def tflite_read(path: Path) -> dict:
    """The appended ``metadata.json``, through the budgeted zip reader (declared size checked before reading)."""
    from yolo_export.limits import loads_json, zip_member
    from yolo_export.metadata import decode

    with open(path, "rb") as f:   # a FlatBuffer with the TFLite file identifier at bytes 4-8
        if f.read(8)[4:8] != b"TFL3":
            raise FileError(f"{path} is not a TFLite model (no 'TFL3' file identifier)")
    field = f"{TFLITE_META} in the appended archive"
    blob = zip_member(path, lambda name: name == TFLITE_META, field)
    if blob is None:
        return {}                                    # a .tflite without our archive (another tool's)
    try:
        data = loads_json(blob, field, path)
    except ValueError as e:
        raise MetadataError(f"{path}: unreadable {field} ({str(e)[:80]})") from None
    return decode(data, path) if isinstance(data, dict) else {}


@register
class TFLiteBackend(_TFBase, name="tflite", aliases=("litert",), title="TFLite", order=70, suffix=".tflite",
                    builds_on="saved_model", options=(HALF, INT8, CALIB_IMAGES)):

    def runtime_available(self):
        if importlib_missing("ai_edge_litert") and importlib_missing("tensorflow"):
            return False, "needs ai-edge-litert (or tensorflow) to run a .tflite"
        return True, ""

    def require_runtime(self):
        ok, why = TFLiteBackend.runtime_available(self)
        if not ok:
            from yolo_export.errors import MissingDependency

            raise MissingDependency(f"running {self.title} models", self.extra,
                                    self.missing_detail(["ai_edge_litert"]))

    def export(self, ctx):
        from yolo_export.utils import LOGGER

        sm = ctx.build("saved_model")
        precision = ctx.precision
        out = ctx.workdir / f"{ctx.stem}.tflite"
        calib = None
        if precision == "int8":
            n = int(ctx.args.get("calib_images") or 256)
            LOGGER.info(f"calibrating full-integer INT8 on {n} images "
                        f"({'from ' + str(ctx.args['data']) if ctx.args.get('data') else 'generated'})...")
            calib = _nhwc_npy(ctx, "tflite_calib.npy", n)
        run_worker("tflite", f"TFLite {precision} conversion", saved_model=Path(sm), out=out, precision=precision,
                   calib=calib)
        tflite_embed(out, _layout_meta(ctx.metadata))
        return out

    def load(self, path, device, metadata, threads=None):
        return TFLiteRunner(path, threads=threads)

    def write_metadata(self, path, meta):
        tflite_embed(Path(path), meta)

    def read_metadata(self, path):
        return tflite_read(Path(path))


# ------------------------------------------------------------------------------------------ Edge TPU
def _edgetpu_lib() -> str | None:
    import ctypes.util

    name = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
    import platform

    lib = name.get(platform.system(), "libedgetpu.so.1")
    for d in ("/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/lib"):
        if Path(d, lib).exists():
            return lib
    return lib if ctypes.util.find_library("edgetpu") else None


@register
class EdgeTPUBackend(TFLiteBackend, name="edgetpu", aliases=("coral",), title="Edge TPU", order=70,
                     suffix="_edgetpu.tflite", builds_on="tflite", options=(INT8, CALIB_IMAGES),
                     precisions=("int8",)):  # full-integer only

    def output_path(self, base, args):
        return base.with_name(base.name + self.suffix)

    def check_args(self, args):
        super().check_args(args)
        args["int8"] = True             # the Edge TPU runs full-integer models only (--half is refused as unknown)

    def is_available(self):
        """The compiler is checked with the libraries, before any work (not after building the INT8 TFLite)."""
        ok, why = super().is_available()
        if ok and shutil.which("edgetpu_compiler") is None:
            return False, (f"needs edgetpu_compiler on PATH: {EDGETPU_INSTALL} (or use --format tflite --int8 for "
                           f"the CPU model)")
        return ok, why

    def runtime_available(self):
        ok, why = super().runtime_available()
        if not ok:
            return ok, why
        if _edgetpu_lib() is None:
            return False, "needs an Edge TPU device and its runtime libedgetpu (apt-get install libedgetpu1-std)"
        return True, ""

    def require_runtime(self):
        super().require_runtime()
        ok, why = self.runtime_available()
        if not ok:
            raise NotAvailable(f"cannot run an Edge TPU model here: {why}")

    def export(self, ctx):
        from yolo_export.utils import LOGGER

        int8 = Path(ctx.build("tflite", int8=True, half=False))
        compiler = shutil.which("edgetpu_compiler")
        if compiler is None:
            raise NotAvailable(f"edgetpu: the full-integer TFLite was built but edgetpu_compiler is not on PATH; "
                               f"{EDGETPU_INSTALL} (or use --format tflite --int8 for the CPU model)")
        cdir = ctx.workdir / "edgetpu"
        cdir.mkdir(exist_ok=True)
        src = cdir / f"{ctx.stem}.tflite"
        src.write_bytes(tflite_model_bytes(int8.read_bytes()))
        LOGGER.info("compiling for the Edge TPU (edgetpu_compiler)...")
        proc = subprocess.run([compiler, "-s", "-o", str(cdir), str(src)], capture_output=True, text=True)
        out = cdir / f"{ctx.stem}_edgetpu.tflite"
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise YoloExportError(f"edgetpu_compiler failed: {tail}")
        tflite_embed(out, _layout_meta(ctx.metadata))
        return out

    def load(self, path, device, metadata, threads=None):
        return TFLiteRunner(path, delegate=_edgetpu_lib(), threads=threads)
