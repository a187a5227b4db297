"""ONNX (``.onnx``): one self-contained file, metadata in ``metadata_props``, run with ONNX Runtime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from yolo_export.errors import ArgumentError, YoloExportError
from yolo_export.registry import Backend, Runner, register

DEFAULT_OPSET = 17
INPUT, OUTPUT = "images", "output0"


class OrtRunner(Runner):
    def __init__(self, path, device="cpu", threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                from yolo_export.errors import NotAvailable

                raise NotAvailable("ONNX on CUDA needs onnxruntime-gpu (pip install onnxruntime-gpu) and an NVIDIA GPU")
            idx = int(str(device).split(":")[1]) if ":" in str(device) else 0
            providers = [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        b = inp.shape[0]
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None
        self.device = str(device)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]


@register
class OnnxBackend(Backend):
    name = "onnx"
    title = "ONNX"
    suffix = ".onnx"
    extra = "onnx"
    requires = ("onnx", "onnxruntime")
    args = frozenset({"half", "dynamic", "simplify", "opset"})

    def check_args(self, args):
        super().check_args(args)
        op = args.get("opset")
        if op is not None and not (11 <= int(op) <= 20):
            raise ArgumentError(f"onnx: --opset must be between 11 and 20 (got {op})")

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
        with warnings.catch_warnings():
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
        set_metadata(model, ctx.metadata)
        onnx.save(model, str(out), save_as_external_data=False)
        raw.unlink(missing_ok=True)
        return out

    def load(self, path, device, metadata):
        return OrtRunner(path, device)

    def write_metadata(self, path: Path, meta):
        import onnx

        model = onnx.load(str(path))
        set_metadata(model, meta)
        tmp = path.with_name(path.name + ".meta-tmp")
        onnx.save(model, str(tmp), save_as_external_data=False)
        tmp.replace(path)

    def read_metadata(self, path):
        import onnx

        from yolo_export.metadata import decode

        model = onnx.load(str(path), load_external_data=False)
        return decode({p.key: p.value for p in model.metadata_props})


def set_metadata(model, meta: dict) -> None:
    from yolo_export.metadata import encode

    enc = encode(meta)
    keep = [p for p in model.metadata_props if p.key not in enc and not p.key.startswith("onnxsim")]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.add(key=p.key, value=p.value)
    for k, v in enc.items():
        model.metadata_props.add(key=k, value=v)


def simplify(model):
    """onnxsim where it works, else onnxslim, else the model unchanged (with a debug line)."""
    from yolo_export.utils import LOGGER

    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
        if ok:
            return simplified
        LOGGER.debug("onnxsim could not validate the simplified model; trying onnxslim")
    except ImportError:
        pass
    except Exception as e:  # noqa: BLE001
        LOGGER.debug(f"onnxsim failed ({e}); trying onnxslim")
    try:
        import onnxslim

        return onnxslim.slim(model)
    except ImportError:
        LOGGER.debug("neither onnxsim nor onnxslim is installed; graph not simplified")
    except Exception as e:  # noqa: BLE001
        LOGGER.debug(f"onnxslim failed ({e}); graph not simplified")
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
