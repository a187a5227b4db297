"""A CPU machine that looks like a GPU machine to this project's code: for checking, without a GPU, what happens
*before* anything would run on the GPU (availability, version guards, refusals, logging, argument handling, skips).

Modes (``YEXPORT_GPU_SIM``): ``notrt`` (an H200 with CUDA torch, no TensorRT), ``trt10`` / ``trt11`` (the same plus
the TensorRT test double in ``tests/fake_tensorrt``, shaped like TensorRT 10.x / 11.x).

What is patched: ``torch.cuda.is_available/device_count/get_device_name/get_device_capability/
get_device_properties/current_device/set_device`` and ``torch.version.cuda`` answer as on one H200 (compute
capability 9.0); ``onnxsim`` and ``onnxslim`` do not import (as on that image). Anything that would run a CUDA
kernel or touch device memory (``.to("cuda")``, ``synchronize``, streams) raises :class:`SimulatedCUDAError`: the
simulation's limit, never a result. Nothing in the project imports this module; child processes get it through
``sitecustomize`` (see :func:`child_env`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SITE_DIR = HERE / "gpusim_site"          # holds the sitecustomize.py that activates the simulation in children
FAKE_TRT_DIR = HERE / "fake_tensorrt"    # holds the tensorrt test double
ENV = "YEXPORT_GPU_SIM"
MODES = {"notrt": None, "trt10": "10.13.0.35", "trt11": "11.4.0.9"}
GPU_NAME, CAPABILITY, MEMORY = "NVIDIA H200 (simulated)", (9, 0), 141 << 30
MARK = "simulated GPU"
ABSENT = ("onnxsim", "onnxslim")                   # the ONNX simplifiers, missing on the GPU image


class SimulatedCUDAError(RuntimeError):
    """A CUDA kernel or device memory was asked for: the simulation stops here (a real GPU would run it)."""


def active() -> str | None:
    """The simulation mode of this process, or None."""
    return os.environ.get(ENV) if os.environ.get(ENV) in MODES else None


def child_env(mode: str, base: dict | None = None) -> dict:
    """Environment for a child Python process that runs under the simulation ``mode``."""
    if mode not in MODES:
        raise ValueError(f"unknown simulation mode {mode!r} (one of {', '.join(MODES)})")
    env = dict(os.environ if base is None else base)
    env[ENV] = mode
    env["PYTHONPATH"] = os.pathsep.join([str(SITE_DIR), str(HERE), *filter(None, [env.get("PYTHONPATH")])])
    if MODES[mode]:
        env["YEXPORT_FAKE_TRT_VERSION"] = MODES[mode]
    return env


def _refuse(*_a, **_k):
    raise SimulatedCUDAError(f"{MARK} ({ENV}={active()}): CUDA kernels and device memory do not exist on this "
                             f"CPU machine; a real GPU would run this")


class _Props:
    def __init__(self, index: int = 0):
        self.name, (self.major, self.minor), self.total_memory = GPU_NAME, CAPABILITY, MEMORY
        self.multi_processor_count, self.index = 132, index


def activate(mode: str) -> None:
    """Patch torch (imported here) and, for the trt modes, put the TensorRT test double on ``sys.path``."""
    import torch

    if mode not in MODES:
        raise ValueError(f"unknown simulation mode {mode!r}")
    cuda = torch.cuda
    cuda.is_available = lambda: True
    cuda.device_count = lambda: 1
    cuda.current_device = lambda: 0
    cuda.set_device = lambda device: None
    cuda.is_initialized = lambda: False
    cuda.get_device_name = lambda device=None: GPU_NAME
    cuda.get_device_capability = lambda device=None: CAPABILITY
    cuda.get_device_properties = lambda device=None: _Props()
    cuda.is_bf16_supported = lambda *a, **k: True
    for name in ("_lazy_init", "synchronize", "Stream", "current_stream", "stream", "Event", "mem_get_info"):
        setattr(cuda, name, _refuse)
    torch.version.cuda = "12.8"
    for name in ABSENT:                    # not on the GPU image this simulates: importing them fails there too
        sys.modules[name] = None
    cuda.SimulatedCUDAError = SimulatedCUDAError
    if MODES[mode]:
        os.environ.setdefault("YEXPORT_FAKE_TRT_VERSION", MODES[mode])
        if str(FAKE_TRT_DIR) not in sys.path:
            sys.path.insert(0, str(FAKE_TRT_DIR))


def is_test_double(module) -> bool:
    return bool(getattr(module, "__test_double__", False))
