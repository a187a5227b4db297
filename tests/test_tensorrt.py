"""TensorRT (``.engine``): every part that runs without a GPU runs here for real; the engine build itself needs
TensorRT and an NVIDIA GPU and skips elsewhere with ``is_available()``'s reason.

Runs here: the length-prefixed metadata header (write, read, atomic rewrite, refusal of what is not ours), the
version / GPU compatibility messages, the argument rules, the ONNX the engine is built from (dynamic profile shapes
run in ONNX Runtime against PyTorch), the INT8 calibration data and cache, and the one-line CLI errors.

Under the GPU simulation (``tests/gpusim.py``, run by ``tests/test_gpu_simulation.py``) the same file also checks,
with the ``tensorrt`` test double, what happens before an engine would exist: availability and its error class,
the TensorRT 10/11 version guards, the builder flags asked for (TF32 off for fp32), and TensorRT's log routing.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import IMGSZ, has, needs
from gpusim import is_test_double


def _state() -> tuple[bool, str, bool]:
    """(is_available(), its reason, whether the tensorrt that imports is the simulation's test double)."""
    from yolo_export import registry

    ok, why = registry.get("engine").is_available()
    double = False
    if ok:
        import tensorrt

        double = is_test_double(tensorrt)
    return ok, why, double


AVAILABLE, WHY, TEST_DOUBLE = _state()
REAL_ENGINE = AVAILABLE and not TEST_DOUBLE
needs_engine = pytest.mark.skipif(not REAL_ENGINE, reason=WHY or "the tensorrt here is the GPU simulation's test "
                                  "double (tests/gpusim.py): a real engine needs TensorRT on an NVIDIA GPU")
needs_trt = pytest.mark.skipif(not AVAILABLE, reason=WHY or "TensorRT is available")
unavailable = pytest.mark.skipif(AVAILABLE, reason="this machine has an NVIDIA GPU and TensorRT")
needs_test_double = pytest.mark.skipif(not TEST_DOUBLE, reason="needs the GPU simulation's tensorrt test double "
                                       "(tests/gpusim.py); a real TensorRT would build the engine")


@pytest.fixture(scope="module")
def trt_backend():
    from yolo_export import registry

    return registry.get("engine")


def _meta(names=("a", "b", "c")):
    return {"description": "test", "names": dict(enumerate(names)), "imgsz": [IMGSZ, IMGSZ], "batch": 4,
            "args": {"half": True, "dynamic": False, "batch": 4}, "stride": 1, "task": "classify",
            "preprocess": {"resize": 36, "crop": IMGSZ, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                           "layout": "NCHW"},
            "tensorrt": {"version": "10.3.0.26", "gpu": "Test GPU", "compute_capability": "8.9"}}


# ------------------------------------------------------------------------------------------- header
def test_header_round_trip(tmp_path, trt_backend):
    from yolo_export.backends.tensorrt import read_header, write_engine

    payload = bytes(range(256)) * 37 + b"\x00tail"          # stands in for the serialized engine bytes
    p = write_engine(tmp_path / "m.engine", _meta(), payload)
    raw = p.read_bytes()
    (n,) = struct.unpack("<I", raw[:4])
    header = json.loads(raw[4:4 + n].decode("utf-8"))       # what any reader of the convention does
    assert header["names"] == {"0": "a", "1": "b", "2": "c"}
    assert header["args"]["dynamic"] is False               # JSON-native, not Python-literal text
    assert raw[4 + n:] == payload
    meta, offset = read_header(p)
    assert offset == 4 + n and meta["tensorrt"]["version"] == "10.3.0.26"
    md = trt_backend.read_metadata(p)
    assert md["names"] == {0: "a", 1: "b", 2: "c"}
    assert md["imgsz"] == [IMGSZ, IMGSZ] and md["batch"] == 4 and md["args"]["half"] is True
    assert md["preprocess"]["crop"] == IMGSZ
    assert [f.name for f in tmp_path.iterdir()] == ["m.engine"]


def test_header_rewrite_is_atomic_and_keeps_engine(tmp_path, trt_backend):
    from yolo_export.backends.tensorrt import read_header, write_engine
    from yolo_export.errors import YoloExportError

    payload = np.random.default_rng(0).bytes(100_000)
    p = write_engine(tmp_path / "m.engine", _meta(), payload)
    new = {k: v for k, v in _meta(("x", "y")).items() if k != "tensorrt"}
    new["verification"] = {"status": "passed", "max_abs_diff": 1e-6}
    trt_backend.write_metadata(p, new)
    meta, offset = read_header(p)
    assert p.read_bytes()[offset:] == payload
    assert meta["verification"]["status"] == "passed" and meta["names"] == {"0": "x", "1": "y"}
    assert meta["tensorrt"]["version"] == "10.3.0.26"          # the build facts stay with the engine
    before = p.read_bytes()
    with pytest.raises(YoloExportError, match="too large"):
        trt_backend.write_metadata(p, {"names": {0: "a"}, "description": "x" * (17 << 20)})
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["m.engine"]


def test_files_without_our_header(tmp_path, trt_backend):
    from yolo_export.backends.tensorrt import read_header
    from yolo_export.errors import YoloExportError

    plain = tmp_path / "plain.engine"                        # an engine written by another tool: no header
    plain.write_bytes(b"ftrt" + bytes(5000))
    assert read_header(plain) == ({}, 0) and trt_backend.read_metadata(plain) == {}
    odd = tmp_path / "odd.engine"                            # a plausible length but not JSON
    odd.write_bytes(struct.pack("<I", 8) + b"\x00" * 8 + b"rest")
    assert read_header(odd) == ({}, 0)
    tiny = tmp_path / "tiny.engine"
    tiny.write_bytes(b"ab")
    with pytest.raises(YoloExportError, match="not a TensorRT engine"):
        read_header(tiny)


def test_engine_suffix_and_aliases(tmp_path, trt_backend):
    from yolo_export import registry

    p = tmp_path / "x.engine"
    p.write_bytes(b"\x00" * 8)
    assert registry.for_path(p) is trt_backend
    assert registry.get("trt") is trt_backend and registry.get("TensorRT") is trt_backend
    assert trt_backend.builds_on == "onnx" and trt_backend.extra == "tensorrt"


# ------------------------------------------------------------------------------------------- compatibility
def test_version_and_gpu_compatibility_messages():
    from yolo_export.backends.tensorrt import compat_problem

    built = {"version": "10.3.0.26", "gpu": "NVIDIA L4", "compute_capability": "8.9"}
    assert compat_problem(built, "10.3.0.26", "NVIDIA L4", "8.9") is None
    assert compat_problem(None, "10.7.0.23") is None and compat_problem({}, "10.7.0.23") is None
    msg = compat_problem(built, "10.7.0.23", "NVIDIA L4", "8.9")
    assert "TensorRT 10.3.0.26" in msg and "TensorRT 10.7.0.23 is installed" in msg
    assert "export it again" in msg and "tensorrt==10.3.0.26" in msg and "\n" not in msg
    for other in ("10.3.0.27", "10.3.0"):                   # the build number counts too (TensorRT checks it)
        msg = compat_problem(built, other, "NVIDIA L4", "8.9")
        assert msg and f"{other} is installed" in msg and "build number" in msg
    msg = compat_problem(built, "10.3.0.26", "NVIDIA H100", "9.0")
    assert "compute capability 8.9" in msg and "NVIDIA H100" in msg and "9.0" in msg and "\n" not in msg


# ------------------------------------------------------------------------------------------- arguments
def test_argument_rules(trt_backend):
    from yolo_export.errors import ArgumentError, NotAvailable, YoloExportError

    args = trt_backend.resolve_args({"half": True, "dynamic": True, "batch": 8, "workspace": 2})
    assert args["device"] == "0" and args["half"] and args["workspace"] == 2 and args["batch"] == 8
    assert trt_backend.resolve_args({"device": "cuda:1"})["device"] == "cuda:1"
    for bad, match in [({"half": True, "int8": True}, "choose one"), ({"workspace": 0}, "workspace"),
                       ({"workspace": -1}, "workspace"), ({"opset": 12}, "does not take --opset"),
                       ({"batch": 0}, "--batch"), ({"int8": True, "calib_images": 0}, "calib-images"),
                       ({"int8": True, "fraction": 1.5}, "fraction"), ({"keras": True}, "does not take")]:
        with pytest.raises(ArgumentError, match=match):
            trt_backend.resolve_args(bad)
    with pytest.raises(YoloExportError, match="unknown device"):
        trt_backend.resolve_args({"device": "gpu7"})
    # --device cpu: where nothing can build an engine the missing GPU/TensorRT is the line; else the device rule
    with pytest.raises(ArgumentError if AVAILABLE else NotAvailable) as e:
        trt_backend.resolve_args({"device": "cpu"})
    assert (WHY or "--device 0") in str(e.value) and "\n" not in str(e.value)


def test_availability_error_classes(trt_backend):
    """No GPU: NotAvailable. A GPU without a working TensorRT: MissingDependency (a NotAvailable that pip fixes).
    Either way the message carries is_available()'s reason word for word, and names the extra when it is missing."""
    import torch

    from yolo_export.errors import MissingDependency, NotAvailable

    ok, why = trt_backend.is_available()
    assert (ok, why) == (AVAILABLE, WHY) and issubclass(MissingDependency, NotAvailable)
    if ok:
        assert why == ""
        trt_backend.require_export(), trt_backend.require_runtime()
        return
    for require in (trt_backend.require_export, trt_backend.require_runtime):
        with pytest.raises(NotAvailable) as e:
            require()
        assert why in str(e.value) and "\n" not in why
        gpu = bool(torch.cuda.is_available()) and torch.version.cuda is not None
        assert isinstance(e.value, MissingDependency) == gpu      # with a GPU only the pip extra is missing
        assert ("NVIDIA GPU" in why) != gpu
        if not has("tensorrt"):
            assert 'pip install "yolo-export[tensorrt]"' in why


def test_dynamic_batch_one_warns(trt_backend):
    from yolo_export.utils import LOGGER

    seen = []
    h = logging.Handler()
    h.emit = lambda r: seen.append(r.getMessage())
    LOGGER.addHandler(h)
    try:
        trt_backend.resolve_args({"dynamic": True})
        trt_backend.resolve_args({"dynamic": True, "batch": 4})
    finally:
        LOGGER.removeHandler(h)
    assert len(seen) == 1 and "--batch N" in seen[0]


def test_profile_workspace_and_calibration_batches(tmp_path):
    from yolo_export.backends.tensorrt import CalibrationData, calibration_batches, profile_shapes, workspace_bytes

    assert profile_shapes(32, (3, 224, 224)) == {"min": (1, 3, 224, 224), "opt": (16, 3, 224, 224),
                                                 "max": (32, 3, 224, 224)}
    assert profile_shapes(1, (3, 8, 8))["opt"] == (1, 3, 8, 8) and profile_shapes(3, (3, 8, 8))["opt"][0] == 1
    assert workspace_bytes(None) is None and workspace_bytes(2) == 2 << 30 and workspace_bytes(0.5) == 1 << 29

    imgs = np.random.default_rng(0).random((10, 3, 8, 8), dtype=np.float32)
    b = calibration_batches(imgs, 4)
    assert [x.shape for x in b] == [(4, 3, 8, 8)] * 3
    np.testing.assert_array_equal(np.concatenate(b)[:10], imgs)          # every image, in order, then padding
    np.testing.assert_array_equal(b[-1][2:], imgs[:2])

    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"model-bytes")
    d = CalibrationData(imgs, 4, onnx_file, cache_dir=tmp_path / "cache")
    assert [d.next_batch() is not None for _ in range(4)] == [True, True, True, False]
    assert d.read_cache() is None
    d.write_cache(memoryview(b"calibration-table"))
    again = CalibrationData(imgs, 4, onnx_file, cache_dir=tmp_path / "cache")
    assert again.cache_path == d.cache_path and again.read_cache() == b"calibration-table"
    other = CalibrationData(imgs[:9], 4, onnx_file, cache_dir=tmp_path / "cache")   # other data: other cache
    assert other.cache_path != d.cache_path and other.read_cache() is None
    assert CalibrationData(imgs, 2, onnx_file, cache_dir=tmp_path / "cache").cache_path != d.cache_path


# ------------------------------------------------------------------------------------------- the ONNX it builds on
def _context(tiny_yolo, trt_backend, tmp_path, **given):
    import torch

    from yolo_export import metadata as md
    from yolo_export.data.transforms import default_preprocess
    from yolo_export.engine.exporter import _meta_args
    from yolo_export.registry import ExportContext

    args = trt_backend.resolve_args(given)
    model = copy.deepcopy(tiny_yolo.model).float().eval().fuse()
    model.imgsz = IMGSZ
    pp = default_preprocess(IMGSZ)
    meta = md.build(model, imgsz=IMGSZ, batch=args["batch"], args=_meta_args(args), preprocess=pp, fmt="engine")
    sample = torch.zeros(args["batch"], 3, IMGSZ, IMGSZ)
    return ExportContext(model=model, sample=sample, args=args, metadata=meta, workdir=tmp_path, stem="tiny",
                         device=torch.device("cpu"))


def _reference(tiny_yolo, x):
    import torch

    with torch.no_grad():
        return tiny_yolo.model.float().eval()(torch.from_numpy(x)).numpy()


@needs("onnx", "onnxruntime", extra="onnx")
def test_onnx_for_dynamic_engine_runs_at_profile_shapes(tiny_yolo, trt_backend, tmp_path):
    from yolo_export.backends.onnx import OrtRunner
    from yolo_export.backends.tensorrt import CalibrationData
    from yolo_export.data.samples import check_inputs

    ctx = _context(tiny_yolo, trt_backend, tmp_path, dynamic=True, batch=8)
    # set after the argument rules: TensorRT 11 refuses --int8 there (own test); --calib-images applies with it only
    ctx.args.update(int8=True, calib_images=12)
    plan = trt_backend.plan(ctx)
    assert plan.onnx.exists() and plan.onnx.parent.parent == tmp_path and plan.dynamic
    assert (plan.input_name, plan.output_name, plan.chw) == ("images", "output0", (3, IMGSZ, IMGSZ))
    assert plan.profile == {"min": (1, 3, IMGSZ, IMGSZ), "opt": (4, 3, IMGSZ, IMGSZ), "max": (8, 3, IMGSZ, IMGSZ)}
    assert plan.precision == "int8" and plan.calib_batch == 4 and plan.workspace_bytes is None
    assert trt_backend.plan(ctx).onnx == plan.onnx              # built once through the registry, then reused

    runner = OrtRunner(plan.onnx, "cpu", threads=1)
    assert runner.fixed_batch is None
    x = check_inputs(IMGSZ, 8)
    for shape in plan.profile.values():
        n = shape[0]
        out, ref = runner(x[:n]), _reference(tiny_yolo, x[:n])
        assert out.shape == (n, 10)
        assert np.abs(out - ref).max() < 1e-4 and (out.argmax(1) == ref.argmax(1)).all()

    images = ctx.calibration_images()                        # what the calibrator is fed (generated: no --data)
    assert images.shape == (12, 3, IMGSZ, IMGSZ) and images.dtype == np.float32
    data = CalibrationData(images, plan.calib_batch, plan.onnx, cache_dir=tmp_path / "cache")
    while (b := data.next_batch()) is not None:
        assert b.shape == plan.profile["opt"] and np.isfinite(runner(b)).all()


@needs("onnx", "onnxruntime", extra="onnx")
def test_onnx_for_static_fp16_engine(tiny_yolo, trt_backend, tmp_path):
    import onnx

    from yolo_export.backends.onnx import OrtRunner
    from yolo_export.data.samples import check_inputs

    ctx = _context(tiny_yolo, trt_backend, tmp_path, half=True, batch=2, workspace=1.5)
    plan = trt_backend.plan(ctx)
    assert not plan.dynamic and plan.profile == {} and plan.calib_batch == 2
    assert plan.precision == "fp16" and plan.workspace_bytes == int(1.5 * (1 << 30))
    # TensorRT 10 builds fp16 from the fp32 ONNX (builder flag); TensorRT 11+ from an fp16 ONNX (strong typing)
    from yolo_export.backends.tensorrt import fp16_from_onnx

    m = onnx.load(str(plan.onnx))
    has_fp16_init = any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
    assert has_fp16_init == fp16_from_onnx()
    if AVAILABLE:
        import tensorrt

        assert fp16_from_onnx() == (not hasattr(tensorrt.BuilderFlag, "FP16"))
    assert {p.key for p in m.metadata_props} >= {"names", "imgsz", "preprocess"}
    runner = OrtRunner(plan.onnx, "cpu", threads=1)
    assert runner.fixed_batch == 2
    x = check_inputs(IMGSZ, 2)
    ref = _reference(tiny_yolo, x)
    assert np.abs(runner(x) - ref).max() < (1e-2 if has_fp16_init else 1e-4)


# ------------------------------------------------------------------------------------------- CLI error paths
@unavailable
@pytest.mark.parametrize("extra", [[], ["--half"], ["--int8", "--dynamic", "--batch", "8"], ["--device", "cpu"],
                                   ["--workspace", "4", "--device", "0"]])
def test_cli_engine_stops_early_with_one_line(cli, pt_copy, trt_backend, extra):
    before = sorted(p.name for p in pt_copy.parent.iterdir())
    code, out, err = cli(pt_copy, "--format", "engine", *extra)
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    ok, why = trt_backend.is_available()
    assert not ok and why in lines[0]
    import torch

    if not torch.cuda.is_available():
        assert "NVIDIA GPU" in lines[0] and "driver" in lines[0]
    if not has("tensorrt"):
        assert 'pip install "yolo-export[tensorrt]"' in lines[0]
    assert sorted(p.name for p in pt_copy.parent.iterdir()) == before    # nothing written beside the model


def test_cli_engine_argument_errors(cli, pt_copy):
    before = sorted(p.name for p in pt_copy.parent.iterdir())
    for extra, match in [(["--half", "--int8"], "choose one"), (["--opset", "12"], "does not take --opset"),
                         (["--workspace", "0"], "workspace")]:
        code, out, err = cli(pt_copy, "--format", "engine", *extra)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and match in lines[0], err
    assert sorted(p.name for p in pt_copy.parent.iterdir()) == before


@unavailable
def test_cli_predict_and_formats_without_trt(cli, tmp_path, images, trt_backend):
    from yolo_export.backends.tensorrt import write_engine

    p = write_engine(tmp_path / "m.engine", _meta(), b"\x00" * 64)
    code, out, err = cli("predict", "--model", p, "--source", images)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and trt_backend.is_available()[1] in lines[0], err
    code, out, err = cli("formats", "--json")
    row = next(r for r in json.loads(out)["formats"] if r["format"] == "engine")
    assert row["export"] is False and row["predict"] is False and row["reason"] == trt_backend.is_available()[1]


# ------------------------------------------------------------------------------------------- with a TensorRT
def _run_py(code: str, *args, cwd=None):
    """Run ``code`` in a child Python (same environment, so a simulation carries over): (rc, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300,
                       cwd=cwd, env={**os.environ, "YOLO_EXPORT_NO_PLUGINS": "1"})
    return p.returncode, p.stdout, p.stderr


CLI = "import sys; from yolo_export.cli import main; sys.argv = ['yexport', *sys.argv[1:]]; main()"


@needs_trt
def test_int8_version_guard(trt_backend, cli, pt_copy):
    """TensorRT 10 takes --int8 (calibrated); 11 removed implicit INT8: refused in one line before any work."""
    import tensorrt as trt

    from yolo_export.backends.tensorrt import int8_problem
    from yolo_export.errors import NotAvailable

    problem = int8_problem(trt)
    assert (problem is None) == (int(trt.__version__.split(".")[0]) < 11)
    if problem is None:
        assert trt_backend.resolve_args({"int8": True, "batch": 2})["int8"] is True
        return
    assert "TensorRT 11" in problem and '"tensorrt>=10,<11"' in problem and "\n" not in problem
    with pytest.raises(NotAvailable, match="removed implicit INT8"):
        trt_backend.resolve_args({"int8": True})
    before = sorted(p.name for p in pt_copy.parent.iterdir())
    code, out, err = cli(pt_copy, "--format", "engine", "--int8", "--json")
    assert code == 1 and json.loads(out)["type"] == "NotAvailable" and problem in err.strip().splitlines()[-1]
    assert sorted(p.name for p in pt_copy.parent.iterdir()) == before


@needs_trt
def test_unreadable_engine_json_and_trt_log_on_stderr(tmp_path, images):
    """TensorRT's own messages go to stderr through the project's logging: ``--json`` stays one document on stdout,
    the failure is one line that carries TensorRT's error, and two runtimes in one process share one logger (no
    'logger differs' warning)."""
    from yolo_export.backends.tensorrt import write_engine

    bad = write_engine(tmp_path / "bad.engine", {k: v for k, v in _meta().items() if k != "tensorrt"}, b"\0" * 64)
    for verbose in ([], ["--verbose"]):
        code, out, err = _run_py(CLI, "predict", "--model", bad, "--source", images, "--device", "0", "--json",
                                 *verbose)
        doc = json.loads(out)                                       # exactly one JSON document, nothing else
        assert code == 1 and doc["type"] == "NotAvailable" and "could not deserialize" in doc["error"], err
        assert "\n" not in doc["error"] and "TensorRT" in doc["error"]
        lines = err.strip().splitlines()
        assert lines[-1] == f"error: {doc['error']}" and "[TRT]" not in err
        if verbose:
            assert any(line.startswith("TensorRT: ") for line in lines[:-1]), err   # routed, at debug level
        else:
            assert len(lines) == 1, err
    twice = ("import sys, logging; from yolo_export.utils import LOGGER; LOGGER.setLevel(logging.DEBUG)\n"
             "from yolo_export.autobackend import AutoBackend\nfrom yolo_export.errors import NotAvailable\n"
             "for _ in range(2):\n    try:\n        AutoBackend(sys.argv[1], device='0')\n"
             "    except NotAvailable:\n        pass\n")
    code, out, err = _run_py(twice, bad)
    assert code == 0 and out == "" and "differs" not in err and err.count("TensorRT: ") >= 2, err


@needs_trt
def test_engine_from_other_build_refused_before_loading(tmp_path, trt_backend):
    """The header's TensorRT version must match to the build number; the refusal comes before TensorRT reads it."""
    import tensorrt as trt

    from yolo_export.autobackend import AutoBackend
    from yolo_export.backends.tensorrt import write_engine
    from yolo_export.errors import NotAvailable

    v = [int(x) for x in trt.__version__.split(".")]
    other = ".".join(map(str, v[:-1] + [v[-1] + 1]))
    meta = _meta()
    meta["tensorrt"] = {"version": other, "gpu": "x", "compute_capability": None}
    p = write_engine(tmp_path / "other.engine", meta, b"\0" * 64)
    with pytest.raises(NotAvailable, match=f"built with TensorRT {other} but TensorRT {trt.__version__}"):
        AutoBackend(p, device="0")


@needs_test_double
@pytest.mark.parametrize("given", [{}, {"half": True, "dynamic": True, "batch": 4, "workspace": 2},
                                   {"int8": True, "dynamic": True, "batch": 4, "calib_images": 8}])
def test_builder_config_asked_of_tensorrt(tiny_yolo, trt_backend, tmp_path, given):
    """With the test double (which builds nothing): the flags, profile and logger this code gives TensorRT's builder.
    fp32 clears TF32; fp16 sets the FP16 flag on TensorRT 10 and builds a strongly typed network from the fp16 ONNX
    on 11; INT8 gets the calibrator and the calibration profile on 10 and is refused on 11."""
    import onnx
    import tensorrt as trt

    from yolo_export.backends.tensorrt import int8_problem, trt_logger
    from yolo_export.errors import NotAvailable, YoloExportError

    if given.get("int8") and int8_problem(trt):
        with pytest.raises(NotAvailable, match="removed implicit INT8"):
            trt_backend.resolve_args(given)
        return
    ctx = _context(tiny_yolo, trt_backend, tmp_path, **given)
    n_configs = len(trt.configs)
    with pytest.raises(YoloExportError, match="could not build the engine: the tensorrt test double builds no"):
        trt_backend.export(ctx)
    config, network = trt.configs[-1], trt.networks[-1]
    assert len(trt.configs) == n_configs + 1 and not list(tmp_path.glob("*.engine"))
    precision = ctx.precision
    assert config.get_flag(trt.BuilderFlag.TF32) == (precision != "fp32")
    ten = trt.MAJOR < 11
    strongly_typed = bool(network.flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
    assert strongly_typed == (not ten)
    if ten:
        assert (trt.BuilderFlag.FP16 in config.flags) == (precision != "fp32")
        assert (trt.BuilderFlag.INT8 in config.flags) == (precision == "int8")
        assert (config.int8_calibrator is not None) == (precision == "int8")
        if precision == "int8":
            assert config.calibration_profile is config.profiles[0]
    if precision == "fp16":
        fp16 = ctx._cache[next(k for k in ctx._cache if k[0] == "onnx")]
        inits = onnx.load(str(fp16)).graph.initializer
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in inits) == (not ten)
    if given.get("dynamic"):
        (shapes,) = config.profiles[0].shapes.values()
        assert shapes == ((1, 3, IMGSZ, IMGSZ), (2, 3, IMGSZ, IMGSZ), (4, 3, IMGSZ, IMGSZ))
    assert config.pools.get(trt.MemoryPoolType.WORKSPACE) == (2 << 30 if given.get("workspace") else None)
    logger = trt_logger(trt)
    assert trt.seen_loggers and all(x is logger for x in trt.seen_loggers)     # one logger, never trt.Logger
    facts = trt_backend.configure(trt, trt.Builder(logger), trt_backend.plan(ctx), "9.0", not ten)[1]
    assert facts == {"tf32": precision != "fp32", "strongly_typed": not ten}


# ------------------------------------------------------------------------------------------- the real engine
@needs_engine
def test_engine_build_predict_parity(tiny_yolo, pt_copy, images, tmp_path):
    from yolo_export import YOLO
    from yolo_export.autobackend import AutoBackend
    from yolo_export.backends.tensorrt import int8_problem, read_header, rewrite_header
    from yolo_export.errors import NotAvailable
    from yolo_export.data.samples import check_inputs

    import tensorrt as trt

    y = YOLO(pt_copy)
    x = check_inputs(IMGSZ, 13)
    ref = _reference(tiny_yolo, x)

    path = y.export("engine", device="0")                     # fp32, static batch 1
    res = y.last_export
    assert res.parity["status"] == "passed" and res.parity["max_abs_diff"] < 1e-3
    meta, _ = read_header(path)
    assert meta["tensorrt"]["version"] == trt.__version__ and meta["verification"]["status"] == "passed"
    assert meta["tensorrt"]["tf32"] in (False, None)          # fp32 engines are built with TF32 off
    ab = AutoBackend(path, device="0")
    assert ab.fixed_batch == 1 and ab.names == tiny_yolo.names
    out = ab.run(x)                                           # 13 inputs through a batch-1 engine
    assert np.abs(out - ref).max() < 1e-3 and (out.argmax(1) == ref.argmax(1)).all()
    pt_top1 = [r.probs.top1 for r in YOLO(pt_copy).predict(images)]
    assert [r.probs.top1 for r in YOLO(path).predict(images)] == pt_top1

    p16 = y.export("engine", half=True, dynamic=True, batch=8, workspace=1, output=str(tmp_path / "h.engine"))
    assert y.last_export.parity["status"] == "passed"
    ab16 = AutoBackend(p16, device="cuda:0")
    assert ab16.fixed_batch is None and ab16.runner.max_batch == 8
    for n in (1, 5, 8, 13):                                   # 13 > max batch: the runner splits
        o = ab16.run(x[:n])
        assert o.shape == (n, 10) and np.abs(o - ref[:n]).max() < 1e-2

    int8 = dict(int8=True, dynamic=True, batch=4, data="digits", calib_images=16, output=str(tmp_path / "q.engine"))
    if int8_problem(trt):                                     # TensorRT 11+: no implicit INT8
        with pytest.raises(NotAvailable, match="removed implicit INT8"):
            y.export("engine", **int8)
    else:
        p8 = y.export("engine", **int8)
        assert y.last_export.parity["status"] == "passed" and read_header(p8)[0]["tensorrt"]["precision"] == "int8"

    meta, _ = read_header(path)                               # an engine from another TensorRT build
    built = meta["tensorrt"]["version"]
    other = built.rsplit(".", 1)[0] + "." + str(int(built.rsplit(".", 1)[1]) + 1)
    rewrite_header(path, {**meta, "tensorrt": {**meta["tensorrt"], "version": other}})
    with pytest.raises(NotAvailable, match=f"built with TensorRT {other}"):
        AutoBackend(path, device="0")
