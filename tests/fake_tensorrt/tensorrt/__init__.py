"""A TEST DOUBLE of the ``tensorrt`` Python bindings, for the GPU simulation in ``tests/gpusim.py`` only.

It has the import shape of TensorRT 10.x or 11.x (``YEXPORT_FAKE_TRT_VERSION``) so that the code that runs *before*
a real engine exists can be exercised on a CPU machine: version guards, the flags and options the builder is asked
for, the logger routing. It never produces an engine: ``build_serialized_network`` and ``deserialize_cuda_engine``
log an error and return None, as the real bindings do when they fail. Nothing that uses it may claim an engine ran.

What differs between the majors, as documented for the 11.x Python API: 11 removed ``BuilderFlag.FP16/INT8``
(strong typing only), ``IBuilderConfig.int8_calibrator`` / ``set_calibration_profile``, the ``IInt8*Calibrator``
classes and ``Builder.platform_has_fast_fp16/int8``. ``BuilderFlag.TF32`` stays and is on by default.
"""

from __future__ import annotations

import enum
import os
import sys

__version__ = os.environ.get("YEXPORT_FAKE_TRT_VERSION", "10.13.0.35")
__test_double__ = True
MAJOR = int(__version__.split(".")[0])

# what the code under test asked for, for the tests to read
seen_loggers: list = []
configs: list = []
networks: list = []


class _Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = _Severity
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (_Severity.INTERNAL_ERROR, _Severity.ERROR, _Severity.WARNING,
                                                     _Severity.INFO, _Severity.VERBOSE)

    def __init__(self):
        pass

    def log(self, severity, msg):  # pragma: no cover - overridden
        raise NotImplementedError


class Logger(ILogger):
    """The bindings' default logger: like the real one, it prints to **stdout**."""

    def __init__(self, min_severity=_Severity.WARNING):
        super().__init__()
        self.min_severity = min_severity

    def log(self, severity, msg):
        if severity <= self.min_severity:
            print(f"[TRT] [{_Severity(severity).name[0]}] {msg}", file=sys.stdout, flush=True)


def _attach(logger, who: str) -> None:
    """Record the logger; like TensorRT, warn through the first logger when a later object gets another one."""
    if seen_loggers and logger is not seen_loggers[0]:
        seen_loggers[0].log(_Severity.WARNING, f"The logger passed into {who} differs from one already provided "
                                                f"for an existing builder, runtime, or refitter.")
    seen_loggers.append(logger)
    logger.log(_Severity.INFO, f"[MemUsageChange] Init CUDA (test double {__version__}, {who})")


def _flag_names() -> list[str]:
    names = ["DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS", "DIRECT_IO"]
    if MAJOR < 11:
        names += ["FP16", "INT8", "BF16", "FP8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]
    return names


BuilderFlag = enum.IntEnum("BuilderFlag", _flag_names())
NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", ["STRONGLY_TYPED"], start=0)
MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM"], start=0)
TensorIOMode = enum.IntEnum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"], start=0)
DataType = enum.IntEnum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL"], start=0)
float32, float16, int8, int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32


class _TimingCache:
    def __init__(self, blob: bytes):
        self.blob = bytes(blob)

    def serialize(self):
        return memoryview(self.blob)


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, mn, opt, mx):
        self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))


class IBuilderConfig:
    _base_slots = ("flags", "pools", "profiles", "timing_cache")
    __slots__ = _base_slots + (("int8_calibrator", "calibration_profile") if MAJOR < 11 else ())

    def __init__(self):
        self.flags = {BuilderFlag.TF32}            # TF32 is on by default, as in TensorRT
        self.pools, self.profiles, self.timing_cache = {}, [], None
        if MAJOR < 11:
            self.int8_calibrator = self.calibration_profile = None
        configs.append(self)

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def get_flag(self, flag):
        return flag in self.flags

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = int(size)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, blob):
        return _TimingCache(blob)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing_cache = cache
        return True

    def get_timing_cache(self):
        return self.timing_cache

    if MAJOR < 11:
        def set_calibration_profile(self, profile):
            self.calibration_profile = profile


class _Network:
    def __init__(self, flags: int):
        self.flags = flags
        networks.append(self)


class Builder:
    def __init__(self, logger):
        self.logger = logger
        _attach(logger, "createInferBuilder")

    if MAJOR < 11:
        platform_has_fast_fp16 = True
        platform_has_fast_int8 = True

    def create_network(self, flags: int = 0):
        return _Network(flags)

    def create_builder_config(self):
        return IBuilderConfig()

    def create_optimization_profile(self):
        return _Profile()

    def build_serialized_network(self, network, config):
        self.logger.log(_Severity.ERROR, "the tensorrt test double builds no engines")
        return None


class OnnxParser:
    def __init__(self, network, logger):
        self.network, self.logger, self.errors = network, logger, []
        _attach(logger, "createParser")

    def parse_from_file(self, path):
        if not os.path.isfile(path):
            self.errors.append(f"could not open {path}")
            return False
        return True

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, i):
        return self.errors[i]


class Runtime:
    def __init__(self, logger):
        self.logger = logger
        _attach(logger, "createInferRuntime")

    def deserialize_cuda_engine(self, blob):
        self.logger.log(_Severity.ERROR, "IRuntime::deserializeCudaEngine: the tensorrt test double runs no engines")
        return None


if MAJOR < 11:
    class IInt8Calibrator:
        def __init__(self):
            pass

    class IInt8EntropyCalibrator2(IInt8Calibrator):
        pass

    class IInt8MinMaxCalibrator(IInt8Calibrator):
        pass
