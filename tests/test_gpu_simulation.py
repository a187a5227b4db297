"""The TensorRT and CUDA tests, and ``benchmarks/gpu_check.py``, on a simulated GPU machine (``tests/gpusim.py``).

Each case runs in a child process where torch reports one H200 (CUDA 12.8, compute capability 9.0) and, per mode,
no TensorRT (``notrt``) or the ``tensorrt`` test double shaped like TensorRT 11.x / 10.x. It checks what a first run
on a real GPU machine meets before any kernel runs: every test passes or skips with its reason (engine tests skip
with ``is_available()``'s reason, or because the tensorrt is a test double; CUDA-kernel tests skip because the GPU is
simulated), and gpu_check ends with exit 0, every missing piece a recorded skip with its reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gpusim import MARK, active, child_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(bool(active()), reason="already inside a GPU simulation")

FILES = {"notrt": ["tests/test_tensorrt.py", "tests/test_cuda_paths.py"],
         "trt11": ["tests/test_tensorrt.py", "tests/test_cuda_paths.py"],
         "trt10": ["tests/test_tensorrt.py"]}
MUST_PASS = {
    "notrt": {"test_availability_error_classes": 1, "test_cli_engine_stops_early_with_one_line": 5,
              "test_cli_predict_and_formats_without_trt": 1, "test_argument_rules": 1,
              "test_onnx_without_cuda_provider_is_one_line": 1, "test_select_device_on_a_gpu_machine": 1},
    "trt11": {"test_availability_error_classes": 1, "test_int8_version_guard": 1,
              "test_unreadable_engine_json_and_trt_log_on_stderr": 1,
              "test_engine_from_other_build_refused_before_loading": 1, "test_builder_config_asked_of_tensorrt": 3,
              "test_onnx_for_static_fp16_engine": 1, "test_onnx_without_cuda_provider_is_one_line": 1},
    "trt10": {"test_int8_version_guard": 1, "test_unreadable_engine_json_and_trt_log_on_stderr": 1,
              "test_builder_config_asked_of_tensorrt": 3, "test_onnx_for_dynamic_engine_runs_at_profile_shapes": 1},
}
SKIP_REASON = {"notrt": "needs the 'tensorrt' extra", "trt11": "test double", "trt10": "test double"}


def _outcomes(junit: Path) -> dict[str, list[tuple[str, str]]]:
    """test function name -> [(outcome, skip reason or failure message)]."""
    out: dict[str, list] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name").split("[")[0]
        kids = {e.tag: e for e in case}
        if "failure" in kids or "error" in kids:
            e = kids.get("failure", kids.get("error"))
            outcome = ("failed", (e.get("message") or "")[:300])
        elif "skipped" in kids:
            outcome = ("skipped", kids["skipped"].get("message", ""))
        else:
            outcome = ("passed", "")
        out.setdefault(name, []).append(outcome)
    return out


@pytest.mark.parametrize("mode", ["notrt", "trt11", "trt10"])
def test_tensorrt_and_cuda_tests_on_simulated_gpu(mode, tmp_path):
    junit = tmp_path / "junit.xml"
    p = subprocess.run([sys.executable, "-m", "pytest", *FILES[mode], "-q", "-rs", "-p", "no:randomly",
                        "-p", "no:cacheprovider", "-p", "no:xdist", f"--junitxml={junit}",
                        f"--basetemp={tmp_path / 'bt'}"],
                       cwd=ROOT, env=child_env(mode), capture_output=True, text=True, timeout=900)
    tail = "\n".join(p.stdout.splitlines()[-30:])
    assert p.returncode == 0 and junit.exists(), tail
    res = _outcomes(junit)
    flat = [(name, *o) for name, outs in res.items() for o in outs]
    assert not [f for f in flat if f[1] == "failed"], tail
    skips = [(name, why) for name, kind, why in flat if kind == "skipped"]
    assert all(why.strip() for _, why in skips), skips                       # every skip says why
    for name, n in MUST_PASS[mode].items():                                   # what the simulation exists to run
        assert [o for o, _ in res.get(name, [])].count("passed") == n, (name, res.get(name))
    (real,) = res["test_engine_build_predict_parity"]
    assert real[0] == "skipped" and SKIP_REASON[mode] in real[1], real
    if "tests/test_cuda_paths.py" in FILES[mode]:
        for name in ("test_pt_and_torchscript_on_cuda", "test_onnx_on_cuda", "test_val_on_cuda"):
            assert all(o == "skipped" and MARK in why for o, why in res[name]), res[name]


@pytest.mark.parametrize("mode", ["notrt", "trt11"])
def test_gpu_check_on_simulated_gpu(mode, tmp_path):
    """gpu_check on a GPU image without onnxruntime's CUDA provider, with no TensorRT or TensorRT 11: exit 0; every
    check that cannot run is a skip with its reason; the val steps run one by one."""
    p = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--quick", "--no-tests", "--out", str(tmp_path)],
                       cwd=ROOT, env=child_env(mode), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["env"]["cuda_available"] is True and "H200" in result["env"]["gpu"]
    checks = {c["check"]: c for c in result["checks"]}
    assert len(checks) == 18 and {c["status"] for c in checks.values()} == {"skipped"}
    assert all(str(c["detail"]).strip() for c in checks.values())
    onnx = [c["detail"] for k, c in checks.items() if "onnx" in k and ("export" in k or "val" in k)]
    assert len(onnx) == 3 and all("CUDAExecutionProvider" in d and "onnxruntime-gpu" in d for d in onnx)
    vals = [k for k in checks if k.startswith("val on")]
    assert len(vals) == 3                                                      # one step per model
    kernels = ["predict .pt on 0 fp32", "export torchscript fp16 on 0", "CLI predict .pt --device 0 --half",
               "train 1 epoch on 0 with AMP", "val on 0: trained pytorch", "val on 0: trained torchscript"]
    for k in kernels:
        (c,) = [c for name, c in checks.items() if name.startswith(k)]
        assert MARK in c["detail"], (k, c)
    engine = {k: c["detail"] for k, c in checks.items() if k.startswith("export engine")}
    assert len(engine) == 3
    if mode == "notrt":
        assert all("needs the 'tensorrt' extra" in d for d in engine.values()), engine
    else:
        (int8,) = [d for k, d in engine.items() if "int8" in k]
        assert "TensorRT 11.4.0.9 removed implicit INT8" in int8
        assert all(MARK in d for k, d in engine.items() if "int8" not in k), engine   # got as far as CUDA
    assert "wrote" in p.stdout and "skipped" in p.stdout.split("check ")[-1]          # the printed table
