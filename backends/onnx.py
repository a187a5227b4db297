"""ONNX (``.onnx``): one self-contained file, metadata in ``metadata_props``, run with ONNX Runtime.

``--int8``: static post-training quantisation with onnxruntime's quantisation tools: QDQ format, per-channel int8
weights, uint8 activations calibrated (min/max) on ``--calib-images`` images from ``--data`` (generated images when
no data is given). The result is a plain ``.onnx`` that runs in ONNX Runtime like any other.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from yolo_export.errors import ArgumentError, FileError, YoloExportError
from yolo_export.registry import CALIB_IMAGES, DYNAMIC, HALF, INT8, Backend, Option, Runner, register

DEFAULT_OPSET = 17
INPUT, OUTPUT = "images", "output0"


class OrtRunner(Runner):
    def __init__(self, path, device="cpu", threads: int | None = None):
        import onnxruntime as ort

        from yolo_export.threads import ort_options

        opts = ort.SessionOptions()
        self.threads = ort_options(opts, threads)
        opts.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        from yolo_export.device import parse_device

        cuda = parse_device(device).startswith("cuda")
        if cuda:
            from yolo_export.device import select_device
            from yolo_export.errors import NotAvailable

            idx = select_device(device).index or 0      # no GPU: one clear line before asking onnxruntime
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise NotAvailable("ONNX on CUDA needs onnxruntime-gpu (pip install onnxruntime-gpu) and an NVIDIA GPU")
            providers = [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        if cuda and "CUDAExecutionProvider" not in self.session.get_providers():
            # onnxruntime falls back to the CPU when its CUDA provider does not load; never do that silently
            raise NotAvailable("onnxruntime-gpu could not start its CUDA provider (check that its CUDA and cuDNN "
                               "libraries match the installed onnxruntime-gpu); use --device cpu")
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        b = inp.shape[0]
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None
        self.device = str(device)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]


SIMPLIFY = Option("simplify", bool, True, "Simplify the ONNX graph (default on).", recorded=True)
OPSET = Option("opset", int, None, "ONNX opset.", range=(11, 20, "an ONNX opset"), recorded=True)


@register
class OnnxBackend(Backend, name="onnx", aliases=("onnxruntime", "ort"), title="ONNX", order=20, suffix=".onnx",
                  extra="onnx", requires=("onnx", "onnxruntime"),
                  options=(HALF, INT8, DYNAMIC, SIMPLIFY, OPSET, CALIB_IMAGES)):
    def check_args(self, args):
        super().check_args(args)
        op = args.get("opset")
        if args.get("int8") and op is not None and int(op) < 13:
            raise ArgumentError(f"onnx --int8 needs --opset 13 or later for per-channel weights (got {op})")

    def export(self, ctx):
        import onnx
        import torch

        opset = int(ctx.args.get("opset") or DEFAULT_OPSET)
        dynamic = bool(ctx.args.get("dynamic"))
        out = ctx.workdir / f"{ctx.stem}.onnx"
        raw = ctx.workdir / f"{ctx.stem}.raw.onnx"
        kw = {}
        if dynamic:
            kw["dynamic_axes"] = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}
        with warnings.catch_warnings(), static_halves(ctx.model):
            warnings.simplefilter("ignore")
            torch.onnx.export(ctx.model.float(), ctx.sample.float(), str(raw), opset_version=opset,
                              input_names=[INPUT], output_names=[OUTPUT], do_constant_folding=True,
                              dynamo=False, **kw)
        model = onnx.load(str(raw))
        onnx.checker.check_model(model)
        if ctx.args.get("simplify", True):
            model = simplify(model)
        if ctx.args.get("half"):
            model = to_fp16(model)
        if ctx.args.get("int8"):
            model = quantize_int8(model, ctx)
        set_metadata(model, ctx.metadata)
        onnx.save(model, str(out), save_as_external_data=False)
        raw.unlink(missing_ok=True)
        return out

    def load(self, path, device, metadata, threads=None):
        return OrtRunner(path, device, threads=threads)

    def write_metadata(self, path: Path, meta):
        import onnx

        model = onnx.load(str(path))
        set_metadata(model, meta)
        tmp = path.with_name(path.name + ".meta-tmp")
        onnx.save(model, str(tmp), save_as_external_data=False)
        tmp.replace(path)

    def graph_stats(self, path):
        import onnx

        return graph_stats(onnx.load(str(path), load_external_data=False))

    def read_metadata(self, path):
        import onnx

        from yolo_export.metadata import decode

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends: a corrupt or truncated file
            raise FileError(f"{path} is not a readable ONNX model (truncated or corrupt: {str(e)[:80]})") from None
        if not model.graph.node:  # protobuf reads many byte strings (an empty file too) as an empty model
            raise FileError(f"{path} is not an ONNX model (no graph; truncated, or another kind of file)")
        check_external_data(model, path)
        return decode({p.key: p.value for p in model.metadata_props}, path)


def graph_stats(model) -> dict:
    """Weights (initializer elements) and 2 x multiply-accumulates of Conv / Gemm / MatMul for one image."""
    from math import prod

    from onnx import shape_inference

    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    params = sum(prod(d) for d in inits.values() if len(d) >= 1)
    g = shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(g.value_info) + list(g.output)}
    flops = 0.0
    for n in g.node:
        w = inits.get(n.input[1]) if len(n.input) > 1 else None
        if w is None:
            continue
        if n.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            out = shapes.get(n.output[0]) or []
            flops += 2.0 * prod(d or 1 for d in out[1:]) * prod(w[1:])
        elif n.op_type in ("Gemm", "MatMul", "MatMulInteger"):
            flops += 2.0 * prod(w)
    return {"params": int(params), "gflops": round(flops / 1e9, 3)}


def check_external_data(model, path) -> None:
    """Every external-data ``location`` of the graph stays inside the model's folder (ONNX Runtime reads them)."""
    from yolo_export.limits import contained

    folder = Path(path).resolve().parent
    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        tensors = list(g.initializer) + [a.t for n in g.node for a in n.attribute if a.HasField("t")]
        for t in tensors:
            for e in t.external_data:
                if e.key == "location":
                    contained(folder, e.value, f"external data location of tensor {t.name!r}", path)
        graphs.extend(a.g for n in g.node for a in n.attribute if a.HasField("g"))
        graphs.extend(sg for n in g.node for a in n.attribute for sg in a.graphs)


def set_metadata(model, meta: dict) -> None:
    from yolo_export.metadata import encode

    enc = encode(meta)
    keep = [p for p in model.metadata_props if p.key not in enc and not p.key.startswith("onnxsim")]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.add(key=p.key, value=p.value)
    for k, v in enc.items():
        model.metadata_props.add(key=k, value=v)


@contextmanager
def static_halves(model):
    """Trace each C2f's two halves as constant channel slices instead of ``chunk``.

    torch's ONNX exporter computes a chunk's bounds at run time (Shape, Gather, Add, Div, Mul, ~70 nodes for
    yolov8n-cls) that a simplifier then folds into these very Slices; tracing them directly gives that graph at once.
    The values are the same (both are views of the same channels); the module is restored afterwards."""
    import torch

    from yolo_export.nn.modules import C2f

    def halves(self, x):
        t = self.cv1(x)
        y = [t[:, :self.c], t[:, self.c:]]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))

    mods = [m for m in model.modules() if type(m) is C2f and "forward" not in vars(m)]
    for m in mods:
        m.forward = halves.__get__(m)
    try:
        yield
    finally:
        for m in mods:
            del m.forward


def tidy(model) -> None:
    """In place: ``Constant`` nodes become initializers (equal ones once) and ``Identity`` nodes of an initializer
    are replaced by it (torch writes one for each weight equal to an earlier one). What a simplifier does to torch's
    graph of these models, without its import (~0.5 s). Graphs with subgraphs are left as they are."""
    from onnx import TensorProto

    g = model.graph
    if any(a.HasField("g") or len(a.graphs) for n in g.node for a in n.attribute):
        return
    inits = {i.name for i in g.initializer}
    outputs = {o.name for o in g.output}
    alias, keep, seen = {}, [], {}
    for n in g.node:
        if n.output[0] in outputs or len(n.output) != 1:
            keep.append(n)
        elif n.op_type == "Constant" and [a.name for a in n.attribute] == ["value"]:
            t = TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = ""
            key = t.SerializeToString()
            if key in seen:  # the same small constant (a slice bound, an axis) once
                alias[n.output[0]] = seen[key]
                continue
            t.name = seen[key] = n.output[0]
            g.initializer.append(t)
            inits.add(t.name)
        elif n.op_type == "Identity" and n.input[0] in inits:
            alias[n.output[0]] = n.input[0]
        else:
            keep.append(n)
    for n in keep:
        for i, name in enumerate(n.input):
            n.input[i] = alias.get(name, name)
    del g.node[:]
    g.node.extend(keep)


def left_to_fold(model) -> bool:
    """Does the graph still hold work for a simplifier: a node computed from constants only, a shape query, an
    identity, a constant node, a subgraph?"""
    g = model.graph
    const = {i.name for i in g.initializer}
    for n in g.node:
        if n.op_type in ("Identity", "Constant", "Shape", "Size") or any(a.HasField("g") or len(a.graphs)
                                                                         for a in n.attribute):
            return True
        if all(i in const or not i for i in n.input):
            return True
    return False


def simplify(model):
    """Tidy the traced graph; then onnxslim (what the reference package uses), else onnxsim, only where something
    is left to fold. For these models the tidy graph is already what onnxslim returns (tests/test_export_core.py),
    so its import (~0.5 s, sympy) and run are skipped; onnxsim gives the same graph but pulls sympy in as well.
    """
    from yolo_export.utils import LOGGER

    tidy(model)
    if not left_to_fold(model):
        LOGGER.debug("onnx: graph already simple (nothing left to fold)")
        return model
    try:
        import onnxslim

        return onnxslim.slim(model)
    except ImportError:
        pass
    except Exception as e:  # noqa: BLE001
        LOGGER.debug(f"onnxslim failed ({e}); trying onnxsim")
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
        if ok:
            return simplified
        LOGGER.debug("onnxsim could not validate the simplified model; graph not simplified")
    except ImportError:
        LOGGER.debug("neither onnxslim nor onnxsim is installed; graph not simplified")
    except Exception as e:  # noqa: BLE001
        LOGGER.debug(f"onnxsim failed ({e}); graph not simplified")
    return model


def to_fp16(model):
    """fp16 weights and compute; float32 inputs and outputs so every runner feeds the same arrays."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as e:  # pragma: no cover
        raise YoloExportError(f"onnx --half needs onnxruntime's float16 converter ({e})") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_float_to_float16(model, keep_io_types=True)


class _CalibrationReader:
    """Feeds calibration batches (the model's batch size; 1 when dynamic) to onnxruntime, with a progress bar.

    onnxruntime's ``CalibrationDataReader`` is duck-typed (``get_next`` returning a feed dict, then None), so this
    class needs no onnxruntime import at module level.
    """

    def __init__(self, images: np.ndarray, batch: int, input_name: str):
        self.batches = [np.ascontiguousarray(images[i:i + batch], dtype=np.float32)
                        for i in range(0, len(images) - batch + 1, batch)] or [images[:batch]]
        self.input_name = input_name
        self._it = None
        self._bar = None

    def get_next(self):
        import sys

        from tqdm import tqdm

        from yolo_export.utils import LOGGER

        if self._it is None:
            self._bar = tqdm(total=len(self.batches), desc="INT8 calibration", unit="batch", file=sys.stderr,
                             leave=False, disable=LOGGER.level > 20)
            self._it = iter(self.batches)
        item = next(self._it, None)
        if item is None:
            self._bar.close()
            return None
        self._bar.update(1)
        return {self.input_name: item}

    def rewind(self):
        self._it = None

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.get_next, None)


def quantize_int8(model, ctx):
    """Static QDQ quantisation: per-channel int8 weights, uint8 activations calibrated on ``ctx`` images."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from yolo_export.utils import LOGGER

    images = ctx.calibration_images(ctx.args.get("calib_images"))
    batch = 1 if ctx.args.get("dynamic") else int(ctx.sample.shape[0])
    if len(images) < batch:
        images = np.concatenate([images] * (batch // max(len(images), 1) + 1))[:batch]
    src = ctx.args.get("data") or "generated images (pass --data for a representative calibration set)"
    LOGGER.info(f"INT8: calibrating on {len(images)} images from {src} (QDQ, per-channel weights)...")
    fp32 = ctx.workdir / f"{ctx.stem}.fp32.onnx"
    prep = ctx.workdir / f"{ctx.stem}.prep.onnx"
    q = ctx.workdir / f"{ctx.stem}.int8.onnx"
    onnx.save(model, str(fp32), save_as_external_data=False)
    src_path = fp32
    try:  # the pre-processing onnxruntime recommends before quantisation (graph optimisation + shape inference)
        from onnxruntime.quantization.shape_inference import quant_pre_process

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32), str(prep))
        src_path = prep
    except Exception as e:  # noqa: BLE001 - quantising the un-preprocessed graph still works
        LOGGER.debug(f"onnx int8: quant_pre_process failed ({e}); quantising the graph as exported")
    reader = _CalibrationReader(images, batch, INPUT)
    softmax = [n.name for n in onnx.load(str(src_path)).graph.node if n.op_type == "Softmax"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(src_path), str(q), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=softmax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    out = onnx.load(str(q))
    for f in (fp32, prep, q):
        f.unlink(missing_ok=True)
    return out
