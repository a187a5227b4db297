"""One prepared run for a machine with an NVIDIA GPU: the CUDA paths and the TensorRT engine, checked and timed.

What it does, in order, each step guarded by a time budget (default 420 s, so the whole run stays under 8 minutes
on an H100) and recorded as ok / failed / skipped with its reason:
  1. the machine: torch/CUDA, GPU, onnxruntime providers, TensorRT (or why it does not import);
  2. yolov8n-cls (1000 classes, random init with a sharpened head so top-1 is decisive) at imgsz 224, saved as .pt;
  3. export on CUDA: TorchScript fp32/fp16, ONNX fp32/fp16 (dynamic batch 32), each with its parity check;
  4. predict on CUDA through the CLI (.pt fp32 and --half) and the Python API (top-1 equal to the CPU's);
  5. val on CUDA (.pt, TorchScript, ONNX where onnxruntime-gpu is installed) and one AMP training epoch on CUDA,
     when the validator / trainer exist (built-in 'digits' data);
  6. this project's CUDA and TensorRT tests (pytest, in a subprocess);
  7. TensorRT engines fp32 / fp16 / INT8 (dynamic batch 32) built, verified and timed, when `tensorrt` imports;
  8. timings in interleaved rounds: latency at batch 1 (median ms) and throughput at batch 32 (images/s),
     fp32 and fp16, through AutoBackend.run on NumPy arrays (host->device and back included, as predict sees it).
Writes gpu_check.json (into $OUT when set, else --out) and prints a table.

    python benchmarks/gpu_check.py [--out DIR] [--budget 450] [--imgsz 224] [--rounds 3] [--no-tests]
"""

from __future__ import annotations

import argparse
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
            print(f"[skip] {name}: {rec['detail']}", flush=True)
            return None
        t = time.perf_counter()
        try:
            out = fn()
            rec.update(status="ok", detail=out if isinstance(out, (str, dict, list)) or out is None else str(out))
        except Skip as e:
            out = None
            rec.update(status="skipped", detail=str(e))
        except Exception as e:  # noqa: BLE001 - a failed check is a result, not the end of the run
            out = None
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            rec.update(status="failed", detail=f"{type(e).__name__}: {first}", traceback=traceback.format_exc(limit=6))
        rec["seconds"] = round(time.perf_counter() - t, 2)
        self.checks.append(rec)
        print(f"[{rec['status']}] {name} ({rec['seconds']} s): {str(rec.get('detail'))[:200]}", flush=True)
        return out


class Skip(Exception):
    pass


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
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available()}
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
    try:
        import tensorrt as trt

        info["tensorrt"] = trt.__version__
    except Exception as e:  # noqa: BLE001 - ImportError or missing libraries (OSError)
        info["tensorrt"] = f"not available ({type(e).__name__}: {e})"
    return info


def time_runner(run, x1, x32, lat_iters: int = 100, thr_iters: int = 15) -> dict:
    """One round: median latency at batch 1 (ms) and throughput at batch 32 (images/s)."""
    for _ in range(10):
        run(x1)
    for _ in range(2):
        run(x32)
    lat = []
    for _ in range(lat_iters):
        t = time.perf_counter()
        run(x1)
        lat.append((time.perf_counter() - t) * 1e3)
    t = time.perf_counter()
    for _ in range(thr_iters):
        run(x32)
    thr = thr_iters * len(x32) / (time.perf_counter() - t)
    return {"latency_ms": statistics.median(lat), "throughput_ips": thr}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for the whole run (default 420)")
    ap.add_argument("--imgsz", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    ap.add_argument("--no-tests", action="store_true", help="skip the pytest step")
    ap.add_argument("--device", default="0", help="'0' (default); 'cpu' is a dry run of this script's own logic")
    ap.add_argument("--cli", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # internal: run the yexport CLI
    ap.add_argument("--pytest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # internal: run pytest
    a = ap.parse_args(argv)
    ensure_importable()
    if a.cli is not None:
        from yolo_export.cli import main as cli_main

        sys.argv = ["yexport", *a.cli]
        return cli_main()
    if a.pytest is not None:
        import pytest

        return pytest.main(a.pytest)

    import numpy as np
    import torch

    from yolo_export import YOLO
    from yolo_export.autobackend import AutoBackend
    from yolo_export.verify import check_inputs

    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="yexport-gpu-"))
    os.environ.setdefault("YOLO_EXPORT_CACHE", str(work / "cache"))
    run = Run(a.budget)
    result = {"env": env_info(), "device": a.device, "imgsz": a.imgsz, "checks": run.checks, "timings": {},
              "parity": {}}
    print(json.dumps(result["env"], indent=1), flush=True)
    dev = a.device
    on_gpu = dev != "cpu"
    cuda = torch.cuda.is_available() or not on_gpu
    if not cuda:
        print("no CUDA GPU visible: the CUDA checks are skipped", flush=True)

    # 2. the model
    torch.manual_seed(0)
    src = YOLO("yolov8n-cls.yaml")
    sharpen(src.model, imgsz=a.imgsz)
    src.model.imgsz = a.imgsz
    pt = Path(src.save(work / "yolov8n-cls.pt"))
    x = check_inputs(a.imgsz, 32, seed=3)
    x1, x32 = x[:1], x
    with torch.no_grad():
        ref = src.model.float().eval()(torch.from_numpy(x)).numpy()
    runners: dict[str, object] = {}

    def add_runner(key, ab):
        out = ab.run(x)
        diff = float(np.abs(out - ref).max())
        agree = float((out.argmax(1) == ref.argmax(1)).mean())
        result["parity"][key] = {"max_abs_diff": diff, "top1_agreement": agree}
        runners[key] = ab
        return {"max_abs_diff": diff, "top1_agreement": agree}

    def need_cuda():
        if not cuda:
            raise Skip("no CUDA GPU")

    # .pt on CUDA, fp32 and fp16 (the PyTorch runner)
    def pt_runner(half):
        need_cuda()
        return add_runner(f"pytorch-{'fp16' if half else 'fp32'}", AutoBackend(YOLO(pt).model, device=dev, half=half))

    run.step(f"predict .pt on {dev} fp32 (AutoBackend)", lambda: pt_runner(False))
    run.step(f"predict .pt on {dev} fp16 (AutoBackend --half)", lambda: pt_runner(True))

    # 3. exports on CUDA
    arts: dict[str, Path] = {}

    def export(key, fmt, **kw):
        need_cuda()
        y = YOLO(pt)
        p = y.export(fmt, device=dev, output=str(work / f"{key}{_suffix(fmt)}"), **kw)
        arts[key] = Path(p)
        res = y.last_export.to_dict()
        par = res.get("parity") or {}
        if par.get("status") == "skipped":
            return {"path": p, "parity": par, "export_s": res["time_s"]}
        info = add_runner(key, AutoBackend(p, device=dev))
        return {"export_s": res["time_s"], "size_mb": res["size_mb"], "parity_at_export": par.get("status"),
                **info}

    run.step(f"export torchscript fp32 on {dev}", lambda: export("torchscript-fp32", "torchscript"), 15)
    run.step(f"export torchscript fp16 on {dev}", lambda: export("torchscript-fp16", "torchscript", half=True), 15)
    run.step(f"export onnx fp32 dynamic on {dev}", lambda: export("onnx-fp32", "onnx", dynamic=True, batch=32), 20)
    run.step(f"export onnx fp16 dynamic on {dev}",
             lambda: export("onnx-fp16", "onnx", half=True, dynamic=True, batch=32), 20)

    # 4. predict through the CLI and the Python API
    img_dir = work / "images"
    img_dir.mkdir()
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(img_dir / f"im{i}.jpg")

    def cli_predict(*extra):
        need_cuda()
        cmd = [sys.executable, __file__, "--cli", "predict", "--model", str(pt), "--source", str(img_dir),
               "--device", dev, "--json", *extra]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}")
        return {"images": len(json.loads(p.stdout))}

    run.step(f"CLI predict .pt --device {dev}", lambda: cli_predict(), 20)
    run.step(f"CLI predict .pt --device {dev} --half", lambda: cli_predict("--half"), 20)

    def api_top1():
        need_cuda()
        base = [r.probs.top1 for r in YOLO(pt).predict(img_dir, device="cpu")]
        out = {}
        for key, p in [("pytorch", pt), *arts.items()]:
            try:
                got = [r.probs.top1 for r in YOLO(p).predict(img_dir, device=dev)]
                out[key] = "same top-1 as CPU" if got == base else f"top-1 differs: {got} vs {base}"
            except Exception as e:  # noqa: BLE001
                out[key] = f"{type(e).__name__}: {e}"
        if any(v != "same top-1 as CPU" for v in out.values()):
            raise RuntimeError(str(out))
        return out

    run.step(f"predict top-1 on {dev} vs cpu (every artefact)", api_top1, 20)

    # 5. train on CUDA (AMP), then val the trained model and its exports on CUDA (digits: 10 classes)
    def train_cuda():
        need_cuda()
        try:
            import yolo_export.engine.trainer  # noqa: F401
        except ImportError as e:
            raise Skip(f"no trainer ({e})") from None
        y = YOLO("yolov8n-cls.yaml", nc=10)
        m = y.train(data="digits", epochs=1, imgsz=32, batch=64, device=dev, amp=True, workers=2,
                    project=str(work / "runs"), plots=False, progress=False)
        best = Path(y.trainer.best)
        trained["pt"] = best
        return {"top1": m.get("top1"), "amp": bool(getattr(y.trainer, "amp", None)), "best": str(best)}

    trained: dict[str, Path] = {}
    run.step(f"train 1 epoch on {dev} with AMP (digits, imgsz 32)", train_cuda, 60)

    def val_cuda():
        need_cuda()
        if "pt" not in trained:
            raise Skip("no trained model (the training step did not run)")
        y = YOLO(trained["pt"])
        models = {"pytorch": trained["pt"],
                  "torchscript": y.export("torchscript", device=dev, output=str(work / "trained.torchscript")),
                  "onnx": y.export("onnx", device=dev, output=str(work / "trained.onnx"))}
        out, errors = {}, []
        for key, p in models.items():
            try:
                m = YOLO(p).val(data="digits", device=dev, batch=64, progress=False)
                out[key] = {k: m.get(k) for k in ("top1", "top5", "time_s")}
            except Exception as e:  # noqa: BLE001
                out[key] = f"{type(e).__name__}: {e}"
                errors.append(key)
        if errors:
            raise RuntimeError(f"val failed for {errors}: {out}")
        return out

    run.step(f"val on {dev}: trained .pt, TorchScript, ONNX (digits)", val_cuda, 40)

    # 6. the project's tests for these paths
    def tests():
        if a.no_tests:
            raise Skip("--no-tests")
        files = ["tests/test_cuda_paths.py", "tests/test_tensorrt.py"]
        tmo = max(30, min(200, run.left() - 120))
        p = subprocess.run([sys.executable, __file__, "--pytest", *files, "-q", "-rs", "-p", "no:cacheprovider"],
                           cwd=ROOT, capture_output=True, text=True, timeout=tmo)
        tail = p.stdout.strip().splitlines()[-12:]
        if p.returncode not in (0, 5):
            raise RuntimeError(" | ".join(tail[-4:]))
        return {"summary": tail}

    run.step("pytest tests/test_cuda_paths.py tests/test_tensorrt.py", tests, 60)

    # 7. TensorRT
    def engine(key, **kw):
        need_cuda()
        try:
            import tensorrt  # noqa: F401
        except Exception as e:  # noqa: BLE001
            raise Skip(f"tensorrt does not import ({type(e).__name__}: {e})") from None
        return export(key, "engine", dynamic=True, batch=32, workspace=4, **kw)

    run.step("export engine fp32 dynamic (TensorRT)", lambda: engine("engine-fp32"), 90)
    run.step("export engine fp16 dynamic (TensorRT)", lambda: engine("engine-fp16", half=True), 90)
    run.step("export engine int8 dynamic (TensorRT, digits calibration)",
             lambda: engine("engine-int8", int8=True, data="digits", calib_images=128), 100)

    # 8. timings, interleaved rounds
    def timings():
        if not runners:
            raise Skip("nothing runs on CUDA here")
        per: dict[str, list] = {k: [] for k in runners}
        for _ in range(a.rounds):
            for k, ab in runners.items():
                if run.left() < 5:
                    break
                per[k].append(time_runner(ab.run, x1, x32))
        table = {}
        for k, rs in per.items():
            if rs:
                table[k] = {"latency_ms_b1": round(statistics.median(r["latency_ms"] for r in rs), 3),
                            "throughput_ips_b32": round(statistics.median(r["throughput_ips"] for r in rs), 1),
                            "rounds": len(rs)}
        result["timings"] = table
        return f"{len(table)} runners timed"

    run.step("timings (latency b1, throughput b32)", timings, 15)

    result["total_s"] = round(time.perf_counter() - run.t0, 1)
    path = out_dir / "gpu_check.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print_table(result)
    print(f"\nwrote {path} ({result['total_s']} s)")
    return 0 if not any(c["status"] == "failed" for c in run.checks) else 1


def _suffix(fmt: str) -> str:
    return {"torchscript": ".torchscript", "onnx": ".onnx", "engine": ".engine"}[fmt]


def print_table(result: dict) -> None:
    print(f"\n{'check':<58} {'status':<8} {'s':>6}")
    for c in result["checks"]:
        print(f"{c['check'][:58]:<58} {c['status']:<8} {c.get('seconds', 0):>6}")
    t = result.get("timings") or {}
    if t:
        base = t.get("pytorch-fp32", {})
        print(f"\n{'runner (imgsz ' + str(result['imgsz']) + ')':<20} {'b1 ms':>8} {'b32 img/s':>10} "
              f"{'x pt b1':>8} {'x pt b32':>9} {'max|dp|':>9} {'top1 agr':>9}")
        for k, v in t.items():
            par = result["parity"].get(k, {})
            r1 = base.get("latency_ms_b1", 0) / v["latency_ms_b1"] if base else float("nan")
            r32 = v["throughput_ips_b32"] / base["throughput_ips_b32"] if base else float("nan")
            print(f"{k:<20} {v['latency_ms_b1']:>8.3f} {v['throughput_ips_b32']:>10.1f} {r1:>8.2f} {r32:>9.2f} "
                  f"{par.get('max_abs_diff', float('nan')):>9.2e} {par.get('top1_agreement', float('nan')):>9.1%}")


if __name__ == "__main__":
    sys.exit(main())
