"""CoreML (``.mlpackage``, ML Program): converted by coremltools from the traced module.

fp32 (default), fp16 compute and weights (``--half``), INT8 weights (``--int8``, linear symmetric per-channel weight
quantisation; activations stay float). Input ``images`` (NCHW float32), output ``output0`` (probabilities).
Metadata: ``user_defined_metadata`` (our string map) plus the description fields (short description, author,
version, license). Prediction needs macOS; on other systems export and metadata work, and running the model fails
with one line saying so.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import warnings
from pathlib import Path

import numpy as np

from yolo_export.errors import ArgumentError, NotAvailable
from yolo_export.registry import HALF, INT8, Backend, Runner, register

INPUT, OUTPUT = "images", "output0"
MACOS_ONLY = "CoreML prediction needs macOS (coremltools runs .mlpackage models only there)"


@contextlib.contextmanager
def _quiet():
    """coremltools logs 'Failed to load _MLModelProxy' on import off macOS and warns about untested torch versions."""
    lg = logging.getLogger("coremltools")
    level = lg.level
    lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        lg.setLevel(level)


# coremltools probes these at import (and so imports all of TensorFlow, ~10 s) for converters we do not use.
# Hidden while it imports, unless already loaded; they import normally afterwards.
_SKIP_AT_IMPORT = ("tensorflow", "executorch", "torchao", "transformers")


def _ct():
    import sys

    if "coremltools" in sys.modules:
        return sys.modules["coremltools"]
    hidden = [m for m in _SKIP_AT_IMPORT if m not in sys.modules]
    try:
        for m in hidden:
            sys.modules[m] = None  # makes `import m` raise ImportError
        with _quiet(), contextlib.redirect_stderr(io.StringIO()):
            import coremltools as ct
    finally:
        for m in hidden:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]
    return ct


class CoreMLRunner(Runner):
    def __init__(self, path):
        if platform.system() != "Darwin":
            raise NotAvailable(MACOS_ONLY)
        ct = _ct()
        with _quiet():
            self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        spec = self.model.get_spec()
        self.input_name = spec.description.input[0].name
        self.output_name = spec.description.output[0].name
        shape = list(spec.description.input[0].type.multiArrayType.shape)
        self.fixed_batch = int(shape[0]) if shape else None
        self.device = "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.model.predict({self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return np.asarray(out[self.output_name], dtype=np.float32)


@register
class CoreMLBackend(Backend, name="coreml", aliases=("mlpackage", "mlmodel"), title="CoreML", order=60,
                    suffix=".mlpackage", is_dir=True, content=("Manifest.json",), writes=("Manifest.json", "Data/*"),
                    extra="coreml",
                    requires=("coremltools",), options=(HALF, INT8)):

    def check_args(self, args):
        super().check_args(args)
        if str(args.get("device") or "cpu") not in ("cpu", "CPU", "mps"):
            raise ArgumentError("coreml export traces on the CPU; drop --device")

    def runtime_available(self):
        if self.missing():
            return False, f"needs the '{self.extra}' extra ({self.missing_detail()})"
        if platform.system() != "Darwin":
            return False, MACOS_ONLY
        return True, ""

    def export(self, ctx):
        import torch

        ct = _ct()
        if ctx.args.get("int8") and ctx.args.get("data"):
            from yolo_export.utils import LOGGER

            LOGGER.info("coreml --int8 quantises weights only; --data is used for the parity check, not calibration")
        model = ctx.model.cpu().float().eval()
        sample = ctx.sample.cpu().float()
        with torch.no_grad():
            traced = torch.jit.trace(model, sample, strict=False, check_trace=False)
        precision = ct.precision.FLOAT16 if ctx.args.get("half") else ct.precision.FLOAT32
        with _quiet():
            ml = ct.convert(traced, inputs=[ct.TensorType(name=INPUT, shape=tuple(sample.shape), dtype=np.float32)],
                            outputs=[ct.TensorType(name=OUTPUT, dtype=np.float32)], convert_to="mlprogram",
                            minimum_deployment_target=ct.target.macOS13, compute_precision=precision)
            if ctx.args.get("int8"):
                from coremltools.optimize.coreml import (OpLinearQuantizerConfig, OptimizationConfig,
                                                         linear_quantize_weights)

                config = OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear_symmetric",
                                                                                  dtype="int8"))
                ml = linear_quantize_weights(ml, config)
        set_metadata(ml, ctx.metadata)
        out = ctx.workdir / f"{ctx.stem}{self.suffix}"
        with _quiet():
            ml.save(str(out))
        return out

    def load(self, path, device, metadata):
        ok, why = self.runtime_available()
        if not ok:
            raise NotAvailable(why)
        return CoreMLRunner(path)

    def write_metadata(self, path: Path, meta):
        """Rewrite the package with new metadata under a temporary name, then swap it in."""
        from yolo_export.utils import remove, replace_path

        ct = _ct()
        path = Path(path)
        with _quiet():
            ml = ct.models.MLModel(str(path), skip_model_load=True)
            set_metadata(ml, meta)
            tmp = path.with_name(f".{path.name}.meta-tmp.mlpackage")
            remove(tmp)
            ml.save(str(tmp))
        replace_path(tmp, path)

    def read_metadata(self, path):
        """``user_defined_metadata`` read straight from the package's model spec (no model load, no eval)."""
        from yolo_export.metadata import decode

        spec = _load_spec(Path(path))
        d = spec.description
        raw = {k: v for k, v in d.metadata.userDefined.items() if not k.startswith("com.github.apple.coremltools")}
        for key, field in (("description", "shortDescription"), ("author", "author"), ("version", "versionString"),
                           ("license", "license")):
            value = getattr(d.metadata, field, "")
            if value and key not in raw:
                raw[key] = value
        return decode(raw, path)


def _load_spec(path: Path):
    _ct()  # the quiet import
    from coremltools.models.utils import load_spec

    with _quiet():
        return load_spec(str(path))


def set_metadata(ml, meta: dict) -> None:
    from yolo_export.metadata import encode

    enc = encode(meta)
    ml.short_description = enc.get("description", "")
    ml.author = enc.get("author", "")
    ml.version = enc.get("version", "")
    ml.license = enc.get("license", "")
    ml.input_description[INPUT] = "float32 NCHW image batch, preprocessed as metadata 'preprocess' says"
    ml.output_description[OUTPUT] = "class probabilities (softmax), class names in metadata 'names'"
    for k, v in enc.items():
        ml.user_defined_metadata[k] = v
