"""One prepared run for a machine with an NVIDIA GPU: the CUDA paths and the TensorRT engine, checked and timed.

    python3 benchmarks/gpu_check.py            # writes $OUT/gpu_check.json (else benchmarks/results/), exit 0 unless
                                               # a check failed; a missing library or provider is a recorded skip

What it does, in order, each step guarded by a time budget (default 420 s, so the whole run stays under 8 minutes
on an H100) and recorded as ok / failed / skipped with its reason:
  1. the machine: torch/CUDA, GPU, onnxruntime providers, TensorRT (or why it does not import);
  2. yolov8n-cls (1000 classes, random init with a sharpened head so top-1 is decisive) at imgsz 224, saved as .pt;
  3. .pt predict on CUDA fp32 / fp16, then export on CUDA: TorchScript fp32/fp16, ONNX fp32/fp16 (dynamic batch 32,
     skipped with the reason when onnxruntime has no CUDA provider), each with its parity check;
  4. predict on CUDA through the CLI (.pt fp32 and --half, --json) and the Python API (top-1 equal to the CPU's);
  5. one AMP training epoch on CUDA (built-in 'digits' data), then val on CUDA of the trained .pt, its TorchScript
     and its ONNX, each its own step (one that cannot run never stops the others);
  6. this project's CUDA and TensorRT tests (pytest, in a subprocess), with their pass / skip counts and reasons;
  7. TensorRT engines fp32 / fp16 / INT8 (dynamic batch 32) built, verified and timed where TensorRT is available
     (skipped with ``is_available()``'s reason otherwise; INT8 skipped on TensorRT 11, which removed it);
  8. timings in interleaved rounds: latency at batch 1 (median ms) and throughput at batch 32 (images/s),
     through AutoBackend.run on NumPy arrays (host->device and back included, as predict sees it).
Writes gpu_check.json (into $OUT when set, else --out) and prints a table.

    python3 benchmarks/gpu_check.py [--out DIR] [--budget 420] [--imgsz 224] [--rounds 3] [--no-tests] [--quick]
    python3 benchmarks/gpu_check.py --device cpu --quick      # dry run of the script's own logic on a CPU

Under the test suite's GPU simulation (tests/gpusim.py), a step that reaches a CUDA kernel stops with the
simulation's SimulatedCUDAError; it is recorded as skipped with that reason (it cannot happen on a real GPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ensure_importable() -> None:
    """Import the package from this checkout even when it is not pip-installed (backends/ -> yolo_export.backends)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import yolo_export

    try:
        import yolo_export.backends  # noqa: F401
    except ModuleNotFoundError:
        mod = types.ModuleType("yolo_export.backends")
        mod.__path__ = [str(ROOT / "backends")]
        sys.modules["yolo_export.backends"] = mod
        yolo_export.backends = mod


class Skip(Exception):
    """A check that cannot run here, with the reason (a missing library, provider or GPU)."""


SIM_TAG = "simulated GPU (YEXPORT_GPU_SIM="      # how the simulation's refusal reads in a child's one-line error


def simulation_limit(e: BaseException) -> str | None:
    """The GPU simulation's refusal (tests/gpusim.py) anywhere in ``e``'s chain, as its message; None otherwise."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if type(e).__name__ == "SimulatedCUDAError":
            return str(e)
        e = e.__cause__ or e.__context__
    return None


class Run:
    def __init__(self, budget: float):
        self.t0 = time.perf_counter()
        self.budget = budget
        self.checks: list[dict] = []

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def step(self, name: str, fn, need_s: float = 5.0):
        """Run ``fn`` unless fewer than ``need_s`` seconds of the budget are left; record the outcome."""
        rec = {"check": name}
        if self.left() < need_s:
            rec.update(status="skipped", detail=f"time budget ({self.left():.0f} s left, needs ~{need_s:.0f} s)")
            self.checks.append(rec)
            print(f"[skipped] {name}: {rec['detail']}", flush=True)
            return None
        t = time.perf_counter()
        out = None
        try:
            out = fn()
            rec.update(status="ok", detail=out if isinstance(out, (str, dict, list)) or out is None else str(out))
        except Skip as e:
            rec.update(status="skipped", detail=str(e))
        except Exception as e:  # noqa: BLE001 - a failed check is a result, not the end of the run
            sim = simulation_limit(e)
            if sim:
                rec.update(status="skipped", detail=sim)
            else:
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                rec.update(status="failed", detail=f"{type(e).__name__}: {first}",
                           traceback=traceback.format_exc(limit=6))
        rec["seconds"] = round(time.perf_counter() - t, 2)
        self.checks.append(rec)
        print(f"[{rec['status']}] {name} ({rec['seconds']} s): {str(rec.get('detail'))[:200]}", flush=True)
        return out


def sharpen(model, gain: float = 4.0, seed: int = 0, imgsz: int = 224):
    """Make a random-init model numerically like a trained one: at init BatchNorm's running statistics do not match
    the activations, which shrink layer by layer until every class gets the same probability. Re-estimate the BN
    statistics on smooth random images, then give the head a spread, so parity figures mean something."""
    import torch

    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        lo = torch.rand(8, 3, max(imgsz // 8, 2), max(imgsz // 8, 2), generator=g)
        model(torch.nn.functional.interpolate(lo, size=imgsz, mode="bilinear", align_corners=False))
    for m in bns:
        m.momentum = 0.03
    model.eval()
    head = model.model[-1].linear
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * gain / head.weight.shape[1] ** 0.5)
        head.bias.zero_()


def env_info() -> dict:
    import numpy as np
    import torch

    info = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        cap = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info.update(gpu=torch.cuda.get_device_name(0), capability=cap,
                    gpu_count=torch.cuda.device_count(), cudnn=torch.backends.cudnn.version())
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["ort_providers"] = ort.get_available_providers()
    except ImportError as e:
        info["onnxruntime"] = f"not installed ({e})"
    from yolo_export import registry

    ok, why = registry.get("engine").is_available()
    info["tensorrt"] = trt_version() or "not installed"
    info["engine_available"] = ok if ok else why
    for mod in ("onnxsim", "onnxslim"):
        try:
            info[mod] = importlib.util.find_spec(mod) is not None
        except ValueError:                       # blocked in sys.modules: not importable
            info[mod] = False
    return info


def trt_version() -> str | None:
    try:
        import tensorrt as trt

        return trt.__version__
    except Exception:  # noqa: BLE001 - ImportError or missing libraries (OSError)
        return None


def ort_cuda() -> str | None:
    """Why ONNX cannot run on CUDA here (None when onnxruntime has its CUDA provider)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        return f"onnxruntime is not installed ({e}): pip install onnxruntime-gpu"
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" in providers:
        return None
    return (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: {', '.join(providers)}): "
            f"pip install onnxruntime-gpu")


def engine_problem(int8: bool = False) -> str | None:
    """Why a TensorRT engine (an INT8 one with ``int8``) cannot be built here; None when it can."""
    from yolo_export import registry

    ok, why = registry.get("engine").is_available()
    if not ok:
        return why
    if int8:
        import tensorrt as trt

        from yolo_export.backends.tensorrt import int8_problem

        return int8_problem(trt)
    return None


def time_runner(run, x1, xb, lat_iters: int = 100, thr_iters: int = 15) -> dict:
    """One round: median latency at batch 1 (ms) and throughput at batch len(xb) (images/s)."""
    for _ in range(max(2, lat_iters // 10)):
        run(x1)
    for _ in range(2):
        run(xb)
    lat = []
    for _ in range(lat_iters):
        t = time.perf_counter()
        run(x1)
        lat.append((time.perf_counter() - t) * 1e3)
    t = time.perf_counter()
    for _ in range(thr_iters):
        run(xb)
    thr = thr_iters * len(xb) / (time.perf_counter() - t)
    return {"latency_ms": statistics.median(lat), "throughput_ips": thr}


def child(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run this script's internal entry (the CLI or pytest) in a child process; a simulation stop is a Skip."""
    p = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    sim = [x for x in p.stderr.splitlines() + p.stdout.splitlines() if SIM_TAG in x]
    if p.returncode != 0 and sim:
        raise Skip(sim[0].split("error: ", 1)[-1].strip())
    return p


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for the whole run (default 420)")
    ap.add_argument("--imgsz", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    ap.add_argument("--no-tests", action="store_true", help="skip the pytest step")
    ap.add_argument("--quick", action="store_true",
                    help="tiny run (imgsz 32, 1 round, few timing iterations, small calibration): checks the logic")
    ap.add_argument("--device", default="0", help="'0' (default); 'cpu' is a dry run of this script's own logic")
    ap.add_argument("--cli", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # internal: run the yexport CLI
    ap.add_argument("--pytest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # internal: run pytest
    a = ap.parse_args(argv)
    if a.quick:
        a.imgsz, a.rounds = min(a.imgsz, 32), 1
    return a


class Check:
    """The state one gpu_check run shares between its steps."""

    def __init__(self, a, run: Run, work: Path, result: dict):
        import numpy as np
        import torch

        from yolo_export import YOLO
        from yolo_export.data.samples import check_inputs

        self.a, self.run, self.work, self.result = a, run, work, result
        self.dev = a.device
        self.cuda = torch.cuda.is_available() or a.device == "cpu"
        self.tb = 8 if a.quick else 32                      # the timing / dynamic batch
        torch.manual_seed(0)
        src = YOLO("yolov8n-cls.yaml")
        sharpen(src.model, imgsz=a.imgsz)
        src.model.imgsz = a.imgsz
        self.pt = Path(src.save(work / "yolov8n-cls.pt"))
        self.x = check_inputs(a.imgsz, self.tb, seed=3)
        with torch.no_grad():
            self.ref = src.model.float().eval()(torch.from_numpy(self.x)).numpy()
        self.np = np
        self.runners: dict[str, object] = {}
        self.arts: dict[str, Path] = {}
        self.trained: dict[str, Path] = {}
        self.img_dir = work / "images"

    def need_cuda(self):
        if not self.cuda:
            raise Skip("no CUDA GPU visible (torch.cuda.is_available() is False)")

    def add_runner(self, key, ab) -> dict:
        np = self.np
        out = ab.run(self.x)
        info = {"max_abs_diff": float(np.abs(out - self.ref).max()),
                "top1_agreement": float((out.argmax(1) == self.ref.argmax(1)).mean())}
        self.result["parity"][key] = info
        self.runners[key] = ab
        return info

    def pt_runner(self, half: bool):
        from yolo_export import YOLO
        from yolo_export.autobackend import AutoBackend

        self.need_cuda()
        key = f"pytorch-{'fp16' if half else 'fp32'}"
        return self.add_runner(key, AutoBackend(YOLO(self.pt).model, device=self.dev, half=half))

    def export(self, key, fmt, **kw):
        from yolo_export import YOLO
        from yolo_export.autobackend import AutoBackend

        self.need_cuda()
        y = YOLO(self.pt)
        suffix = {"torchscript": ".torchscript", "onnx": ".onnx", "engine": ".engine"}[fmt]
        p = y.export(fmt, device=self.dev, output=str(self.work / f"{key}{suffix}"), **kw)
        self.arts[key] = Path(p)
        res = y.last_export.to_dict()
        par = res.get("parity") or {}
        if par.get("status") == "skipped":
            return {"path": p, "parity": par, "export_s": res["time_s"]}
        info = self.add_runner(key, AutoBackend(p, device=self.dev))
        extra = {}
        if fmt == "engine":
            from yolo_export.backends.tensorrt import read_header

            facts = read_header(p)[0].get("tensorrt") or {}
            extra = {k: facts.get(k) for k in ("version", "precision", "tf32", "strongly_typed")}
        return {"export_s": res["time_s"], "size_mb": res["size_mb"], "parity_at_export": par.get("status"),
                **extra, **info}

    def onnx_export(self, key, **kw):
        self.need_cuda()
        why = ort_cuda() if self.dev != "cpu" else None
        if why:
            raise Skip(why)
        return self.export(key, "onnx", dynamic=True, batch=self.tb, **kw)

    def engine(self, key, **kw):
        self.need_cuda()
        why = engine_problem(int8=bool(kw.get("int8")))
        if why:
            raise Skip(why)
        return self.export(key, "engine", dynamic=True, batch=self.tb, workspace=4, **kw)

    def images(self):
        from PIL import Image

        self.img_dir.mkdir(exist_ok=True)
        rng = self.np.random.default_rng(0)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=self.np.uint8)).save(self.img_dir / f"{i}.jpg")

    def cli_predict(self, *extra):
        self.need_cuda()
        p = child(["--cli", "predict", "--model", str(self.pt), "--source", str(self.img_dir), "--device", self.dev,
                   "--json", *extra], timeout=180)
        if p.returncode != 0:
            raise RuntimeError(f"exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}")
        return {"images": len(json.loads(p.stdout))}

    def api_top1(self):
        """Top-1 on CUDA equals the CPU's for the .pt and every artefact exported above."""
        from yolo_export import YOLO

        self.need_cuda()
        base = [r.probs.top1 for r in YOLO(self.pt).predict(self.img_dir, device="cpu")]
        out, bad = {}, []
        for key, p in [("pytorch", self.pt), *self.arts.items()]:
            got = [r.probs.top1 for r in YOLO(p).predict(self.img_dir, device=self.dev)]
            out[key] = "same top-1 as CPU" if got == base else f"top-1 differs: {got} vs {base}"
            bad += [key] if got != base else []
        if bad:
            raise RuntimeError(str(out))
        return out

    def train(self):
        from yolo_export import YOLO

        self.need_cuda()
        y = YOLO("yolov8n-cls.yaml", nc=10)
        m = y.train(data="digits", epochs=1, imgsz=32, batch=64, device=self.dev, amp=True, workers=2,
                    project=str(self.work / "runs"), plots=False, progress=False,
                    fraction=0.25 if self.a.quick else None)
        self.trained["pytorch"] = Path(y.trainer.best)
        return {"top1": m.get("top1"), "amp": bool(getattr(y.trainer, "amp", None)), "best": str(y.trainer.best)}

    def val(self, kind: str):
        """Val on CUDA of the trained model as ``kind`` (pytorch / torchscript / onnx), exported here if needed."""
        from yolo_export import YOLO

        self.need_cuda()
        if kind == "onnx" and self.dev != "cpu" and ort_cuda():
            raise Skip(ort_cuda())
        note = {}
        if "pytorch" not in self.trained:          # the val path still runs, on an untrained 10-class model
            y = YOLO("yolov8n-cls.yaml", nc=10)
            y.model.imgsz = 32
            self.trained["pytorch"] = Path(y.save(self.work / "untrained10.pt"))
            self.untrained = True
        if getattr(self, "untrained", False):
            note = {"model": "untrained (the training step did not run)"}
        if kind not in self.trained:
            suffix = {"torchscript": ".torchscript", "onnx": ".onnx"}[kind]
            self.trained[kind] = Path(YOLO(self.trained["pytorch"]).export(
                kind, device=self.dev, output=str(self.work / f"trained{suffix}")))
        m = YOLO(self.trained[kind]).val(data="digits", device=self.dev, batch=64, progress=False)
        return {**{k: m.get(k) for k in ("top1", "top5", "time_s")}, **note}

    def tests(self):
        if self.a.no_tests:
            raise Skip("--no-tests")
        junit = self.work / "pytest.xml"
        files = ["tests/test_cuda_paths.py", "tests/test_tensorrt.py"]
        tmo = max(30, min(240, self.run.left() - 100))
        p = child(["--pytest", *files, "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:randomly",
                   f"--junitxml={junit}"], timeout=tmo)
        tail = p.stdout.strip().splitlines()[-20:]
        summary = junit_summary(junit) if junit.exists() else {}
        if p.returncode not in (0, 5):
            raise RuntimeError(" | ".join(tail[-4:]))
        return {**summary, "tail": tail[-1:]}

    def timings(self):
        if not self.runners:
            raise Skip("nothing runs on CUDA here")
        x1, xb = self.x[:1], self.x
        iters = (5, 2) if self.a.quick else (100, 15)
        per: dict[str, list] = {k: [] for k in self.runners}
        for _ in range(self.a.rounds):
            for k, ab in self.runners.items():
                if self.run.left() < 5:
                    break
                per[k].append(time_runner(ab.run, x1, xb, *iters))
        table = {}
        for k, rs in per.items():
            if rs:
                table[k] = {"latency_ms_b1": round(statistics.median(r["latency_ms"] for r in rs), 3),
                            f"throughput_ips_b{len(xb)}": round(statistics.median(r["throughput_ips"] for r in rs), 1),
                            "rounds": len(rs)}
        self.result["timings"] = table
        return f"{len(table)} runners timed"


def junit_summary(path: Path) -> dict:
    """Counts and skip reasons from a pytest JUnit XML file."""
    import xml.etree.ElementTree as ET

    cases = ET.parse(path).getroot().iter("testcase")
    out = {"passed": 0, "failed": 0, "skipped": 0, "skip_reasons": {}}
    for c in cases:
        kinds = {e.tag for e in c}
        if kinds & {"failure", "error"}:
            out["failed"] += 1
        elif "skipped" in kinds:
            out["skipped"] += 1
            msg = next(e for e in c if e.tag == "skipped").get("message", "")
            out["skip_reasons"][msg] = out["skip_reasons"].get(msg, 0) + 1
        else:
            out["passed"] += 1
    return out


def steps(c: Check, run: Run) -> None:
    dev, tb = c.dev, c.tb
    run.step(f"predict .pt on {dev} fp32 (AutoBackend)", lambda: c.pt_runner(False))
    run.step(f"predict .pt on {dev} fp16 (AutoBackend --half)", lambda: c.pt_runner(True))
    run.step(f"export torchscript fp32 on {dev}", lambda: c.export("torchscript-fp32", "torchscript"), 15)
    run.step(f"export torchscript fp16 on {dev}", lambda: c.export("torchscript-fp16", "torchscript", half=True), 15)
    run.step(f"export onnx fp32 dynamic on {dev}", lambda: c.onnx_export("onnx-fp32"), 20)
    run.step(f"export onnx fp16 dynamic on {dev}", lambda: c.onnx_export("onnx-fp16", half=True), 20)
    c.images()
    run.step(f"CLI predict .pt --device {dev}", lambda: c.cli_predict(), 20)
    run.step(f"CLI predict .pt --device {dev} --half", lambda: c.cli_predict("--half"), 20)
    run.step(f"predict top-1 on {dev} vs cpu (every artefact)", c.api_top1, 20)
    run.step(f"train 1 epoch on {dev} with AMP (digits, imgsz 32)", c.train, 60)
    for kind in ("pytorch", "torchscript", "onnx"):
        run.step(f"val on {dev}: trained {kind} (digits)", lambda kind=kind: c.val(kind), 30)
    run.step("pytest tests/test_cuda_paths.py tests/test_tensorrt.py", c.tests, 60)
    run.step(f"export engine fp32 dynamic (TensorRT, batch {tb})", lambda: c.engine("engine-fp32"), 90)
    run.step(f"export engine fp16 dynamic (TensorRT, batch {tb})", lambda: c.engine("engine-fp16", half=True), 90)
    calib = 16 if c.a.quick else 128
    run.step(f"export engine int8 dynamic (TensorRT, {calib} digits images)",
             lambda: c.engine("engine-int8", int8=True, data="digits", calib_images=calib), 100)
    run.step(f"timings (latency b1, throughput b{tb})", c.timings, 15)


def main(argv=None):
    a = parse_args(argv)
    ensure_importable()
    if a.cli is not None:
        from yolo_export.cli import main as cli_main

        sys.argv = ["yexport", *a.cli]
        return cli_main()
    if a.pytest is not None:
        import pytest

        return pytest.main(a.pytest)

    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="yexport-gpu-"))
    os.environ.setdefault("YOLO_EXPORT_CACHE", str(work / "cache"))
    run = Run(a.budget)
    result = {"env": env_info(), "device": a.device, "imgsz": a.imgsz, "quick": a.quick, "checks": run.checks,
              "timings": {}, "parity": {}}
    print(json.dumps(result["env"], indent=1), flush=True)
    c = Check(a, run, work, result)
    if not c.cuda:
        print("no CUDA GPU visible: the CUDA checks are skipped", flush=True)
    steps(c, run)

    result["total_s"] = round(time.perf_counter() - run.t0, 1)
    path = out_dir / "gpu_check.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print_table(result)
    print(f"\nwrote {path} ({result['total_s']} s)")
    return 0 if not any(ch["status"] == "failed" for ch in run.checks) else 1


def print_table(result: dict) -> None:
    print(f"\n{'check':<58} {'status':<8} {'s':>6}  detail")
    for ch in result["checks"]:
        detail = "" if ch["status"] == "ok" else str(ch.get("detail"))[:110]
        print(f"{ch['check'][:58]:<58} {ch['status']:<8} {ch.get('seconds', 0):>6}  {detail}")
    t = result.get("timings") or {}
    if t:
        base = t.get("pytorch-fp32", {})
        thr_key = next(k for k in next(iter(t.values())) if k.startswith("throughput"))
        print(f"\n{'runner (imgsz ' + str(result['imgsz']) + ')':<20} {'b1 ms':>8} {thr_key[-4:] + ' img/s':>10} "
              f"{'x pt b1':>8} {'x pt bN':>8} {'max|dp|':>9} {'top1 agr':>9}")
        for k, v in t.items():
            par = result["parity"].get(k, {})
            r1 = base.get("latency_ms_b1", 0) / v["latency_ms_b1"] if base else float("nan")
            r32 = v[thr_key] / base[thr_key] if base else float("nan")
            print(f"{k:<20} {v['latency_ms_b1']:>8.3f} {v[thr_key]:>10.1f} {r1:>8.2f} {r32:>8.2f} "
                  f"{par.get('max_abs_diff', float('nan')):>9.2e} {par.get('top1_agreement', float('nan')):>9.1%}")


if __name__ == "__main__":
    sys.exit(main())
