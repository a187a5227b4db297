"""OpenVINO (``*_openvino_model/`` with ``model.xml`` + ``model.bin``): converted from the PyTorch module.

fp32 (default), fp16 weight compression (``--half``), INT8 post-training quantisation with NNCF calibrated on
``--data`` images (``--int8``), dynamic batch (``--dynamic``). Metadata lives in the IR's ``rt_info``
(``model_info/<key>``) and in ``metadata.yaml`` beside it.

Precision at run time: OpenVINO runs fp32 IR in bfloat16 on CPUs that have bf16 units. On a yolov8n-cls that moved
the probabilities by up to 0.16 (top-1 changed on 3 % of inputs), beyond even the fp16 tolerance, so the runner asks
for ``INFERENCE_PRECISION_HINT=f32`` for every export (``--half`` halves the weights on disk; compute stays f32).
The hint is recorded in metadata as ``inference_precision``; ``OpenVINORunner(path, precision="bf16")`` opts in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolo_export.errors import ArgumentError, FileError
from yolo_export.registry import CALIB_IMAGES, DYNAMIC, HALF, INT8, Backend, Runner, register
from yolo_export.utils import LOGGER

XML, BIN = "model.xml", "model.bin"
INPUT, OUTPUT = "images", "output0"
RT_SECTION = "model_info"


def _xml(path: Path) -> Path:
    path = Path(path)
    if path.is_file():
        return path
    if (path / XML).exists():
        return path / XML
    found = sorted(path.glob("*.xml"))
    if not found:
        raise FileError(f"no OpenVINO .xml model in {path}")
    return found[0]


def inference_precision(metadata: dict) -> str | None:
    """The INFERENCE_PRECISION_HINT to use for an artefact: what its metadata says, else f32."""
    hint = metadata.get("inference_precision")
    if hint:
        return None if str(hint) == "default" else str(hint)
    return "f32"


class OpenVINORunner(Runner):
    """Compiled OpenVINO model on CPU. ``threads``: INFERENCE_NUM_THREADS; ``precision``: overrides the hint."""

    def __init__(self, path, metadata: dict | None = None, threads: int | None = None, precision: str | None = None):
        import openvino as ov

        metadata = metadata or {}
        core = ov.Core()
        model = core.read_model(str(_xml(path)))
        config = {}
        hint = precision if precision is not None else inference_precision(metadata)
        if hint and hint != "default":
            config["INFERENCE_PRECISION_HINT"] = hint
        from yolo_export.threads import resolve

        config["INFERENCE_NUM_THREADS"] = resolve(threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.request = self.compiled.create_infer_request()
        self.precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        shape = model.inputs[0].get_partial_shape()
        b = shape[0]
        self.fixed_batch = b.get_length() if b.is_static else None
        self.device = "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        res = self.request.infer({0: x})
        return np.asarray(res[self.compiled.outputs[0]])


@register
class OpenVINOBackend(Backend, name="openvino", aliases=("ov",), title="OpenVINO", order=30, suffix="_openvino_model",
                      is_dir=True, content=("*.xml", "*.bin"), writes=("*.xml", "*.bin", "*.mapping", "metadata.yaml"),
                      extra="openvino", requires=("openvino",),
                      options=(HALF, INT8, DYNAMIC, CALIB_IMAGES)):

    def missing(self, int8: bool = False) -> list[str]:
        miss = super().missing()
        if int8:
            from importlib.util import find_spec

            miss += [m for m in ("nncf",) if find_spec(m) is None]
        return miss

    def check_args(self, args):
        super().check_args(args)
        if str(args.get("device") or "cpu") not in ("cpu", "CPU"):
            raise ArgumentError("openvino exports and runs on the CPU here; drop --device")
        if args.get("int8") and self.missing(int8=True):
            from yolo_export.errors import MissingDependency

            raise MissingDependency("OpenVINO --int8 export", self.extra, self.missing_detail(self.missing(int8=True)))

    def export(self, ctx):
        import openvino as ov
        import torch

        model = ctx.model.cpu().float().eval()
        sample = ctx.sample.cpu().float()
        batch = -1 if ctx.args.get("dynamic") else int(sample.shape[0])
        with torch.no_grad():
            om = ov.convert_model(model, example_input=sample, input=[[batch, *sample.shape[1:]]])
        om.inputs[0].get_tensor().set_names({INPUT})
        om.outputs[0].get_tensor().set_names({OUTPUT})
        if ctx.args.get("int8"):
            om = self._quantize(om, ctx)
        ctx.metadata["inference_precision"] = "f32"
        if ctx.args.get("dynamic"):
            ctx.metadata.setdefault("args", {})["dynamic"] = True
        set_rt_info(om, ctx.metadata)
        out = ctx.workdir / f"{ctx.stem}{self.suffix}"
        out.mkdir(parents=True, exist_ok=True)
        ov.save_model(om, str(out / XML), compress_to_fp16=bool(ctx.args.get("half")))
        super().write_metadata(out, ctx.metadata)
        return out

    def _quantize(self, om, ctx):
        import nncf

        images = ctx.calibration_images()
        src = ctx.args.get("data") or "generated images"
        LOGGER.info(f"INT8: calibrating on {len(images)} images from {src} with NNCF...")
        static = om.inputs[0].get_partial_shape()[0]
        step = static.get_length() if static.is_static else 1
        items = []
        for i in range(0, len(images), step):
            chunk = images[i:i + step]
            if len(chunk) < step:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - len(chunk), axis=0)])
            items.append(np.ascontiguousarray(chunk, dtype=np.float32))
        import contextlib
        import sys

        with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars print to stdout; keep it for --json
            return nncf.quantize(om, nncf.Dataset(items), subset_size=len(items),
                                 preset=nncf.QuantizationPreset.MIXED)

    def recognise(self, path):
        """A folder holding an IR, or a model-server layout's ``model.xml`` (with its ``.bin``) named directly."""
        path = Path(path)
        if path.is_file():
            return path.suffix == ".xml" and path.with_suffix(".bin").is_file()
        return super().recognise(path)

    def graph_stats(self, path):
        """Weights (floating constants, and the 8/4-bit ones of an INT8 IR) and 2 x multiply-accumulates of (group)
        convolutions and MatMuls."""
        from math import prod

        import openvino as ov

        quantised = (ov.Type.i8, ov.Type.u8, ov.Type.i4, ov.Type.u4)
        params, flops = 0, 0.0
        for op in ov.Core().read_model(str(_xml(path))).get_ordered_ops():
            kind = op.get_type_name()
            if kind == "Constant" and (op.get_output_element_type(0).is_real()
                                       or op.get_output_element_type(0) in quantised):
                params += prod(op.get_output_shape(0))
            elif kind in ("Convolution", "GroupConvolution", "MatMul"):
                w = list(op.input(1).get_partial_shape().get_min_shape())
                out = [int(d.get_min_length()) or 1 for d in op.get_output_partial_shape(0)]
                per = prod(w[2:]) if kind == "GroupConvolution" else prod(w[1:]) if kind == "Convolution" else 0
                flops += 2.0 * (prod(out[1:]) * per if kind != "MatMul" else prod(w))
        return {"params": int(params), "gflops": round(flops / 1e9, 3)}

    def load(self, path, device, metadata, threads=None):
        self.cpu_only(device)
        return OpenVINORunner(path, metadata, threads=threads)

    def write_metadata(self, path: Path, meta):
        """Metadata into ``rt_info`` (the IR is rewritten under temporary names, then renamed) and metadata.yaml."""
        import openvino as ov

        xml = _xml(path)
        model = ov.Core().read_model(str(xml))
        set_rt_info(model, meta)
        tmp_xml = xml.with_name(f".{xml.stem}.meta-tmp.xml")
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        tmp_xml.with_suffix(".bin").replace(xml.with_suffix(".bin"))
        tmp_xml.replace(xml)
        super().write_metadata(path, meta)

    def read_metadata(self, path):
        """From ``rt_info`` where OpenVINO is installed, over metadata.yaml beside the IR.

        Our ``rt_info`` section carries the whole schema (class names included). Other YOLO tools write only
        preprocessing hints for a model-serving API there (``labels``, ``scale_values``, ``reverse_input_channels``:
        the raw IR takes the same [0, 1] input as every other format) and keep their metadata in metadata.yaml, which
        then is the carrier."""
        try:
            rt = read_rt_info(path)
        except ImportError:
            rt = {}
        if "names" in rt:
            return rt
        return super().read_metadata(path) or rt


def set_rt_info(model, meta: dict) -> None:
    from yolo_export.metadata import encode

    for k, v in encode(meta).items():
        model.set_rt_info(str(v), [RT_SECTION, k])


def read_rt_info(path) -> dict:
    import openvino as ov

    from yolo_export.metadata import decode

    model = ov.Core().read_model(str(_xml(path)))
    if not model.has_rt_info([RT_SECTION]):
        return {}
    section = model.get_rt_info([RT_SECTION])
    raw = {}
    for key in section.astype(dict):
        raw[key] = model.get_rt_info([RT_SECTION, key]).astype(str)
    return decode(raw, path)
