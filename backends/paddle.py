"""PaddlePaddle (``*_paddle_model/`` with ``model.json`` + ``model.pdiparams``): x2paddle from the traced module.

Runs with ``paddle.inference`` on CPU; the batch dimension is dynamic. Metadata: ``metadata.yaml`` beside the model.

One process with TensorFlow: ``import paddle`` segfaults (inside libpaddle's protobuf) when TensorFlow, Keras or
LiteRT was imported first. :func:`import_paddle` then loads paddle's shared libraries with ``RTLD_DEEPBIND`` so
that they bind to their own symbols first; every import of paddle here goes through it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from yolo_export.errors import ArgumentError, YoloExportError
from yolo_export.registry import Backend, Runner, model_files, register

MODEL, PARAMS = "model.json", "model.pdiparams"
# Modules whose shared libraries clash with libpaddle's when loaded into the process before it.
CLASHING = ("tensorflow", "keras", "tf_keras", "ai_edge_litert", "tflite_runtime")


def import_paddle():
    """``import paddle`` that is safe after TensorFlow (see the module docstring)."""
    if "paddle" in sys.modules:
        return sys.modules["paddle"]
    clash = [m for m in CLASHING if m in sys.modules]
    deepbind = getattr(os, "RTLD_DEEPBIND", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No ccache found" at import
        if clash and deepbind and hasattr(sys, "setdlopenflags"):
            old = sys.getdlopenflags()
            sys.setdlopenflags(old | deepbind)
            try:
                import paddle
            finally:
                sys.setdlopenflags(old)
        else:
            import paddle
    return paddle


def _files(path) -> tuple[Path, Path]:
    """Our layout keeps the graph at the top of the folder; the reference package's keeps it in ``inference_model/``
    (beside its metadata.yaml and the dygraph code it also writes)."""
    path = Path(path)
    sub = path / "inference_model"
    if not any(path.glob("*.json")) and not any(path.glob("*.pdmodel")) and sub.is_dir() and not sub.is_symlink():
        path = sub
    return model_files(path, MODEL, ("*.json", "*.pdmodel"), ".pdiparams", "Paddle")


class PaddleRunner(Runner):
    """A ``paddle.inference`` predictor on CPU. ``threads``: CPU math library threads (default: paddle's)."""

    def __init__(self, path, threads: int | None = None):
        import_paddle()
        from paddle import inference

        model, params = _files(path)
        config = inference.Config(str(model), str(params))
        config.disable_gpu()
        config.disable_glog_info()
        from yolo_export.threads import resolve

        config.set_cpu_math_library_num_threads(resolve(threads))
        self.threads = int(config.cpu_math_library_num_threads())
        self.predictor = inference.create_predictor(config)
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])
        self.device = "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.input.reshape(list(x.shape))
        self.input.copy_from_cpu(x)
        self.predictor.run()
        return self.output.copy_to_cpu()


@contextlib.contextmanager
def _quiet_x2paddle(save_dir: Path):
    """x2paddle prints banners, imports generated code from ``save_dir`` via sys.path and may call exit()."""
    import x2paddle.convert

    saved_path = list(sys.path)
    sys.modules.pop("x2paddle_code", None)
    loggers = [logging.getLogger("x2paddle"), logging.getLogger("x2paddle.convert")]
    if isinstance(getattr(x2paddle.convert, "logger", None), logging.Logger):
        loggers.append(x2paddle.convert.logger)
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield buf
    except SystemExit as e:
        tail = buf.getvalue().strip().splitlines()[-1:] or [f"exit {e.code}"]
        raise YoloExportError(f"x2paddle failed to convert the model: {tail[0]}") from None
    finally:
        sys.path[:] = saved_path
        sys.modules.pop("x2paddle_code", None)
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


@register
class PaddleBackend(Backend, name="paddle", aliases=("paddlepaddle",), title="PaddlePaddle", order=50,
                    suffix="_paddle_model", is_dir=True, content=("*.pdiparams",), extra="paddle",
                    writes=("*.json", "*.pdmodel", "*.pdiparams", "*.pdiparams.info", "metadata.yaml"),
                    requires=("paddle", "x2paddle", "six", "requests"), dists=("paddlepaddle",),
                    packages={"paddle": "paddlepaddle"}):

    def check_args(self, args):
        super().check_args(args)
        if str(args.get("device") or "cpu") not in ("cpu", "CPU"):
            raise ArgumentError("paddle exports and runs on the CPU here; drop --device")

    def runtime_available(self):
        if "paddle" in self.missing():
            return False, f"needs the '{self.extra}' extra ({self.missing_detail(['paddle'])})"
        return True, ""

    def require_runtime(self):
        if "paddle" in self.missing():
            from yolo_export.errors import MissingDependency

            raise MissingDependency("running PaddlePaddle models", self.extra, self.missing_detail(["paddle"]))

    def export(self, ctx):
        import torch

        import_paddle()
        model = ctx.model.cpu().float().eval()
        sample = ctx.sample.cpu().float()
        scratch = ctx.workdir / "x2paddle"
        with _quiet_x2paddle(scratch):
            from x2paddle.convert import pytorch2paddle

            with torch.no_grad():
                pytorch2paddle(model, save_dir=str(scratch), jit_type="trace", input_examples=[sample],
                               disable_feedback=True)
        src = scratch / "inference_model"
        if not (src / MODEL).exists() and not list(src.glob("*.pdmodel")):
            raise YoloExportError(f"x2paddle wrote no inference model under {src}")
        model_file, params_file = _files(src)
        out = ctx.workdir / f"{ctx.stem}{self.suffix}"
        out.mkdir(parents=True, exist_ok=True)
        model_file.replace(out / f"model{model_file.suffix}")
        params_file.replace(out / PARAMS)
        ctx.metadata.setdefault("args", {})["dynamic"] = True  # the batch dimension of the Paddle graph is free
        super().write_metadata(out, ctx.metadata)
        return out

    def load(self, path, device, metadata, threads=None):
        return PaddleRunner(path, threads=threads)
