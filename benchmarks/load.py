"""Throughput quiet and under a deliberate background load, with the default threads and with ``--threads 1``.

Each figure comes from a fresh child process that uses yolo-export as a user would (``YOLO(model, threads=...)``,
so the start-up part of the thread policy applies as it does for them). Background loads:

- ``torch``: another PyTorch job, a loop of 384x384 matmuls with torch's default threads and OpenMP's default
  (spinning) wait policy;
- ``spin``: one pure-Python busy loop per CPU.

Rounds alternate (every load and every configuration once per round, the order rotated); the tables give medians
and ratios (loaded / quiet, TorchScript / eager, ours / floor, ours / reference package). The ONNX floor is the
bare runtime call plus the CPU time of decoding and preprocessing one image, shared by the cores. The reference
package runs from its own venv (``--ref-python``, default ``/tmp/refvenv/bin/python``) on the same ONNX file.

    python benchmarks/load.py --quick                         # a few minutes: 2 rounds, quiet + torch
    python benchmarks/load.py --rounds 5 --json load.json     # every load and task (a quieter machine)

Tasks (``--tasks``): predict (batch 1, imgsz 32 and 224), val (digits, imgsz 32), train (one epoch of digits at
imgsz 32), reference (ONNX predict end to end at 224 vs the reference package, and the floor), export (ONNX export
with the parity check vs the reference package's export, wall and CPU time), int8 (ONNX and OpenVINO int8 export
at 32: calibration and the parity check).

numpy's BLAS pool (OpenBLAS or MKL, threads of its own outside the thread policy): every child reports the CPU time
that pool's threads spent during its task (``blas_pool_cpu_ms``: 0 means no BLAS call of the task was large enough
to wake them) and how often OpenBLAS had to start its pool again after a fork (``blas_pool_restarts``: only such a
call does; see ``BlasPool``). ``--blas`` also runs every predict/val/train/int8 job a second time with that pool
limited to one thread (``OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1``, label ``blas1``), in the same rounds, and prints
the ratios:

    python benchmarks/load.py --quick --blas --threads default --tasks predict,val,train,int8 \
        --formats pytorch,torchscript,onnx
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
FORMATS = ("pytorch", "torchscript", "onnx", "openvino")
BLAS1 = {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
BG_TORCH = "import torch\na = torch.randn(384, 384)\nwhile True:\n    a @ a\n"


def clean_env(**extra) -> dict:
    """The environment a user's process would start with: no wait policy chosen, no thread count forced."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS",
                                                           "YOLO_EXPORT_THREADS", *BLAS1)}
    env.update(extra)
    return env


def start_load(kind: str) -> list:
    if kind == "quiet":
        return []
    if kind == "torch":
        procs = [subprocess.Popen([sys.executable, "-c", BG_TORCH], env=clean_env())]
    elif kind == "spin":
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    else:
        raise SystemExit(f"unknown load {kind!r}")
    time.sleep(1.5)
    return procs


def stop_load(procs: list) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def child(spec: dict, timeout: float = 900) -> dict:
    env = clean_env(**spec.get("env", {}))
    out = subprocess.run([sys.executable, str(HERE), "--child", json.dumps(spec)], env=env, capture_output=True,
                         text=True, timeout=timeout)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ children
def _jpegs(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(n):
        yy, xx = np.mgrid[0:h, 0:w]
        arr = np.stack([(xx * (i + 3)) % 256, (yy * 7 + i * 11) % 256, rng.integers(0, 256, (h, w))], -1)
        Image.fromarray(arr.astype(np.uint8)).save(folder / f"im{i:03d}.jpg", quality=90)
    return folder


def do_setup(s: dict) -> dict:
    """Models and images: yolov8n-cls nc=10 at 32 (pt, torchscript, onnx, openvino), nc=1000 at 224 (pt,
    torchscript, onnx; the reference package's own checkpoint, imported), JPEGs 64x48 and 640x480."""
    from yolo_export import YOLO

    d = Path(s["dir"])
    out = {"src32": str(_jpegs(d / "img64x48", s["images"], (64, 48))),
           "src224": str(_jpegs(d / "img640x480", s["images"], (640, 480), seed=1))}
    y = YOLO("yolov8n-cls.yaml", nc=10)
    y.model.imgsz = 32
    out["pytorch32"] = y.save(d / "m32.pt")
    y = YOLO(out["pytorch32"])
    for f in ("torchscript", "onnx", "openvino"):
        try:
            out[f + "32"] = y.export(f, imgsz=32, threads=1)
        except Exception as e:  # noqa: BLE001 - a missing extra leaves its rows empty
            out[f + "32"] = None
            print(f"{f}: {e}", file=sys.stderr)
    ref = d / "ref224.pt"
    code = f"from ultralytics import YOLO; YOLO('yolov8n-cls.yaml').save({str(ref)!r})"
    made = Path(s["ref_python"]).exists() and subprocess.run(
        [s["ref_python"], "-c", code], capture_output=True, text=True, env=clean_env(YOLO_OFFLINE="1")).returncode == 0
    big = YOLO(str(ref)) if made else YOLO("yolov8n-cls.yaml")
    if not made:
        big.model.imgsz = 224
        ref = Path(big.save(d / "m224.pt"))
        big = YOLO(str(ref))
    out["pytorch224"] = str(ref)
    out["torchscript224"] = big.export("torchscript", imgsz=224, threads=1, output=str(d / "m224.torchscript"))
    out["onnx224"] = big.export("onnx", imgsz=224, threads=1, output=str(d / "m224.onnx"))
    out["ref_ok"] = made
    return out


def _predict(model: str, src: str, threads, passes: int = 2) -> dict:
    from yolo_export import YOLO

    y = YOLO(model, threads=threads)
    files = sorted(str(p) for p in Path(src).iterdir())
    y.predict(files[:2])
    best = None
    for _ in range(passes):
        t0 = time.perf_counter()
        res = y.predict(src)
        e2e = (time.perf_counter() - t0) * 1e3 / len(res)
        inf = statistics.mean(r.speed["inference"] for r in res)
        if best is None or e2e < best[0]:
            best = (e2e, inf)
    return {"e2e_ms": round(best[0], 3), "inference_ms": round(best[1], 3), "threads": res[0].threads}


def do_predict(s: dict) -> dict:
    out = {}
    for key, src in (("32", "src32"), ("224", "src224")):
        model = s["models"].get(s["format"] + key)
        if model and key in s["sizes"]:
            out[key] = _predict(model, s["models"][src], s["threads"])
    return out


def do_val(s: dict) -> dict:
    from yolo_export import YOLO

    y = YOLO(s["models"][s["format"] + "32"], threads=s["threads"])
    y.val(data="digits", batch=32, progress=False, fraction=0.1)
    m = y.val(data="digits", batch=32, progress=False, fraction=s["fraction"])
    return {"ms_per_img": round(m["time_s"] * 1e3 / m["n"], 3), "threads": m["threads"], "n": m["n"]}


def do_train(s: dict) -> dict:
    from yolo_export import YOLO

    with tempfile.TemporaryDirectory() as tmp:
        out = YOLO("yolov8n-cls.yaml").train(data="digits", epochs=1, imgsz=32, batch=64, threads=s["threads"],
                                             fraction=s["fraction"], project=tmp, name="t", val=False, plots=False,
                                             progress=False)
    return {"img_per_s": out["images_per_s"], "threads": out["threads"], "workers": out["workers"]}


def do_int8(s: dict) -> dict:
    """ONNX and OpenVINO int8 exports at 32 (calibration on digits, parity check), wall seconds each."""
    from yolo_export import YOLO

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        y = YOLO(s["models"]["pytorch32"], threads=s["threads"])
        for fmt, name in (("onnx", "m.onnx"), ("openvino", "m_openvino_model")):
            t0 = time.perf_counter()
            try:
                y.export(fmt, imgsz=32, int8=True, data="digits", threads=s["threads"], output=str(Path(tmp) / name))
            except Exception as e:  # noqa: BLE001 - a missing extra leaves its figure empty
                print(f"{fmt} int8: {e}", file=sys.stderr)
                continue
            out[fmt] = {"wall_s": round(time.perf_counter() - t0, 3)}
    return out


def do_floor(s: dict) -> dict:
    """Bare ONNX Runtime call (batch 1, default threads) + decode/preprocess CPU time per image / cores."""
    import numpy as np

    from yolo_export.autobackend import AutoBackend
    from yolo_export.engine.predictor import _load, resolve_preprocess
    from yolo_export.data.sources import iter_items
    from yolo_export.threads import available_cpus

    ab = AutoBackend(s["models"]["onnx224"])
    pp = resolve_preprocess(ab, None)
    items = list(iter_items(s["models"]["src224"]))
    c0 = time.process_time()
    arrs = [_load(it, pp)[0] for it in items]
    decode_cpu = (time.process_time() - c0) * 1e3 / len(items)
    x = np.stack(arrs[:1])
    for _ in range(3):
        ab.runner(x)
    ts = []
    for _ in range(max(20, len(items))):
        t0 = time.perf_counter()
        ab.runner(x)
        ts.append((time.perf_counter() - t0) * 1e3)
    bare = statistics.median(ts)
    cores = available_cpus()
    return {"bare_ms": round(bare, 3), "decode_cpu_ms": round(decode_cpu, 3), "cores": cores,
            "floor_ms": round(bare + decode_cpu / cores, 3), "threads": ab.threads}


REF_PREDICT = """
import json, sys, time
from pathlib import Path
from ultralytics import YOLO
model, src = sys.argv[1], sys.argv[2]
m = YOLO(model, task="classify")
files = sorted(str(p) for p in Path(src).iterdir())
for f in files[:2]:
    m.predict(f, imgsz=224, verbose=False)
best = None
for _ in range(2):
    t0 = time.perf_counter()
    n = sum(1 for _ in m.predict(src, imgsz=224, verbose=False, stream=True))
    ms = (time.perf_counter() - t0) * 1e3 / n
    best = ms if best is None else min(best, ms)
print(json.dumps({"e2e_ms": round(best, 3)}))
"""


def reference_predict(s: dict) -> dict:
    out = subprocess.run([s["ref_python"], "-c", REF_PREDICT, s["models"]["onnx224"], s["models"]["src224"]],
                         capture_output=True, text=True, env=clean_env(YOLO_OFFLINE="1"), timeout=900)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed_cmd(cmd: list[str], cwd: Path, env: dict) -> dict:
    """Wall and CPU (user + sys of the child) seconds of one command."""
    r0 = os.wait4 if hasattr(os, "wait4") else None
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r0:
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        cpu = ru.ru_utime + ru.ru_stime
    else:  # pragma: no cover
        p.wait()
        cpu = float("nan")
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if p.returncode != 0:
        return {"error": (err.strip().splitlines() or ["?"])[-1]}
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def export_pair(s: dict, work: Path) -> dict:
    """Ours (yexport, parity check on) and the reference package's ONNX export of the same checkpoint, at 224."""
    src = Path(s["models"]["pytorch224"])
    out = {}
    for who in ("ours", "reference"):
        d = work / f"export-{who}"
        d.mkdir(exist_ok=True)
        (d / "m.pt").write_bytes(src.read_bytes())
        yexport = str(Path(sys.executable).with_name("yexport"))
        cmd = ([yexport, "m.pt", "--format", "onnx", "--imgsz", "224"] if who == "ours" else
               [str(Path(s["ref_python"]).with_name("yolo")), "export", "model=m.pt", "format=onnx", "imgsz=224"])
        out[who] = timed_cmd(cmd, d, clean_env(YOLO_OFFLINE="1"))
    return out


def _task_cpu_ms(tids: set[str]) -> float:
    """User + system CPU milliseconds of these threads of this process (those that still run)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for tid in tids:
        try:
            f = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12])
    return total * 1e3 / tick


class BlasPool:
    """numpy's BLAS pool in this child: the threads that appear on ``import numpy`` (called first, then left 0.3 s
    for the pool's start-up spin to end, so that a task's figure is its own), and the CPU time they spend.

    OpenBLAS ends its pool before every ``fork()`` (a DataLoader worker, say) and starts a new one at the next BLAS
    call large enough to use threads; the pool's CPU time is read before each fork, and a pool found running again
    after one (``blas_server_avail``) is counted in ``restarts``: such a call happened. None where that flag cannot be
    read (another BLAS)."""

    def __init__(self):
        try:
            before = set(os.listdir("/proc/self/task"))
        except OSError:  # pragma: no cover - no /proc
            before = None
        import numpy  # noqa: F401

        self.tids = set(os.listdir("/proc/self/task")) - before if before is not None else set()
        self.size = len(self.tids)
        self.avail = _openblas_flag()
        time.sleep(0.3)
        self.cpu, self.forks, self.restarts = -_task_cpu_ms(self.tids), 0, 0
        os.register_at_fork(before=self._before_fork)

    def _running_again(self) -> bool:
        return bool(self.forks and not self.tids and self.avail is not None and self.avail.value)

    def _before_fork(self) -> None:
        self.restarts += self._running_again()
        self.cpu += _task_cpu_ms(self.tids)
        self.tids = set()
        self.forks += 1

    def report(self) -> dict:
        return {"blas_pool_cpu_ms": round(self.cpu + _task_cpu_ms(self.tids), 1), "blas_pool_threads": self.size,
                "blas_pool_restarts": None if self.avail is None else self.restarts + self._running_again(),
                "forks": self.forks}


def _openblas_flag():
    """OpenBLAS's ``blas_server_avail`` (1 while its pool runs) in numpy's BLAS, or None."""
    import ctypes

    try:
        from threadpoolctl import threadpool_info

        path = next(i["filepath"] for i in threadpool_info() if i.get("internal_api") == "openblas")
        return ctypes.c_int.in_dll(ctypes.CDLL(path), "blas_server_avail")
    except (ImportError, StopIteration, OSError, ValueError, KeyError):
        return None


def run_child(spec: dict) -> dict:
    fn = {"setup": do_setup, "predict": do_predict, "val": do_val, "train": do_train, "floor": do_floor,
          "refpredict": reference_predict, "int8": do_int8}[spec["task"]]
    pool = BlasPool()
    out = fn(spec)
    if isinstance(out, dict):
        out.update(pool.report())
    return out


# ------------------------------------------------------------------------------------------------ driver
def plan(a, models: dict) -> list[dict]:
    jobs = []
    tasks = a.tasks.split(",")
    for fmt in a.formats.split(","):
        if not models.get(fmt + "32"):
            continue
        for t in a.threads_opts:
            if "predict" in tasks:
                sizes = ["32"] + (["224"] if fmt in ("pytorch", "torchscript", "onnx") else [])
                jobs.append({"task": "predict", "format": fmt, "threads": t, "sizes": sizes})
            if "val" in tasks:
                jobs.append({"task": "val", "format": fmt, "threads": t, "fraction": a.fraction})
        if "predict" in tasks and a.old_policy and fmt in ("pytorch", "torchscript"):
            # what a process got before the policy: libgomp's default (spin, then sleep), one thread per core. An
            # unknown value keeps libgomp's default (it prints a warning) and stops yolo_export from choosing one.
            jobs.append({"task": "predict", "format": fmt, "threads": os.cpu_count() or 1, "sizes": ["32", "224"],
                         "env": {"OMP_WAIT_POLICY": "libgomp-default"}, "label": "old-spin"})
    if "train" in tasks:
        jobs += [{"task": "train", "format": "pytorch", "threads": t, "fraction": a.fraction} for t in a.threads_opts]
    if "int8" in tasks and models.get("pytorch32"):
        jobs.append({"task": "int8", "format": "pytorch", "threads": None})
    if a.blas:  # the same default-thread jobs with numpy's BLAS pool limited to one thread
        jobs += [{**j, "env": {**j.get("env", {}), **BLAS1}, "label": "blas1"} for j in list(jobs)
                 if j["task"] in ("predict", "val", "train", "int8") and j["threads"] is None and not j.get("label")]
    if "reference" in tasks:
        jobs += [{"task": "floor"}, {"task": "refpredict"}]
    if "export" in tasks:
        jobs.append({"task": "export"})
    return jobs


def key_of(job: dict) -> str:
    t = job.get("threads")
    label = job.get("label") or ("default" if t is None else f"t{t}")
    return "/".join(str(x) for x in (job["task"], job.get("format", ""), label))


def loadavg() -> float:
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:
        return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="2 rounds, quiet+torch, 24 images, fraction 0.1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loads", default="quiet,torch,spin")
    ap.add_argument("--tasks", default="predict,val,train,reference,export")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--fraction", type=float, default=0.25, help="share of digits for val and the training epoch")
    ap.add_argument("--ref-python", default="/tmp/refvenv/bin/python")
    ap.add_argument("--work", help="folder for models and images (default: a temporary one)")
    ap.add_argument("--json", help="write every measurement here")
    ap.add_argument("--threads", default="default,1", help="thread settings to run: 'default' and/or counts")
    ap.add_argument("--blas", action="store_true", help="also run each default-thread job with numpy's BLAS pool "
                    "limited to one thread (label blas1), and print the ratios")
    ap.add_argument("--old-policy", action="store_true", help="also time PyTorch/TorchScript predict as before the "
                    "policy (libgomp's default spinning, a thread per core)")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(run_child(json.loads(a.child))))
        return
    if a.quick:
        a.rounds, a.images, a.fraction = 2, 24, 0.1
        if a.loads == "quiet,torch,spin":
            a.loads = "quiet,torch"
    a.threads_opts = [None if t == "default" else int(t) for t in a.threads.split(",")]
    ref_ok = Path(a.ref_python).exists()
    tmp = tempfile.TemporaryDirectory()
    work = Path(a.work or tmp.name)
    t_start = time.time()
    print(f"setup in {work} (load average {loadavg():.2f})", file=sys.stderr)
    models = child({"task": "setup", "dir": str(work), "images": a.images, "ref_python": a.ref_python})
    if "error" in models:
        raise SystemExit(f"setup failed: {models['error']}")
    if not (ref_ok and models.get("ref_ok")):
        a.tasks = ",".join(t for t in a.tasks.split(",") if t not in ("export",))
    jobs = plan(a, models)
    loads = a.loads.split(",")
    res: dict = {}
    lavg: dict = {}
    for r in range(a.rounds):
        for load in (loads if r % 2 == 0 else loads[::-1]):
            procs = start_load(load)
            lavg.setdefault(load, []).append(loadavg())
            try:
                order = jobs[r % len(jobs):] + jobs[:r % len(jobs)]
                for job in order:
                    spec = {**job, "models": models, "ref_python": a.ref_python}
                    if job["task"] == "export":
                        out = export_pair(spec, work)
                    elif job["task"] == "refpredict" and not ref_ok:
                        continue
                    else:
                        out = child(spec)
                    res.setdefault(load, {}).setdefault(key_of(job), []).append(out)
                    print(f"round {r + 1} {load:6} {key_of(job):28} {json.dumps(out)}", file=sys.stderr)
            finally:
                stop_load(procs)
    summary = summarise(res, loads)
    report = {"uptime_load_avg": {k: [round(x, 2) for x in v] for k, v in lavg.items()},
              "cpus": os.cpu_count(), "rounds": a.rounds, "images": a.images, "fraction": a.fraction,
              "minutes": round((time.time() - t_start) / 60, 1), "summary": summary, "raw": res}
    print_report(report, loads)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))


def _med(rows: list[dict], *path):
    vals = []
    for r in rows:
        v = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(v)
    return round(statistics.median(vals), 3) if vals else None


def summarise(res: dict, loads: list[str]) -> dict:
    """Medians per load: predict ms (e2e and runtime) at 32/224, val ms/img, train img/s, floor, reference."""
    out: dict = {}
    for load in loads:
        per = res.get(load, {})
        s = out.setdefault(load, {})
        for key, rows in per.items():
            task = key.split("/")[0]
            if task == "predict":
                for size in ("32", "224"):
                    for f in ("e2e_ms", "inference_ms", "threads"):
                        v = _med(rows, size, f)
                        if v is not None:
                            s[f"{key}/{size}/{f}"] = v
            elif task == "val":
                s[f"{key}/ms_per_img"] = _med(rows, "ms_per_img")
                s[f"{key}/threads"] = _med(rows, "threads")
            elif task == "train":
                s[f"{key}/img_per_s"] = _med(rows, "img_per_s")
                s[f"{key}/threads"] = _med(rows, "threads")
            elif task == "floor":
                for f in ("floor_ms", "bare_ms", "decode_cpu_ms", "threads"):
                    s[f"floor/{f}"] = _med(rows, f)
            elif task == "refpredict":
                s["reference/onnx224/e2e_ms"] = _med(rows, "e2e_ms")
            elif task == "export":
                for who in ("ours", "reference"):
                    for f in ("wall_s", "cpu_s"):
                        s[f"export/{who}/{f}"] = _med(rows, who, f)
            elif task == "int8":
                for fmt in ("onnx", "openvino"):
                    s[f"{key}/{fmt}/wall_s"] = _med(rows, fmt, "wall_s")
            if task != "export":
                s[f"{key}/blas_pool_cpu_ms"] = _med(rows, "blas_pool_cpu_ms")
                s[f"{key}/blas_pool_restarts"] = _med(rows, "blas_pool_restarts")
    return out


def _blas_lines(v: dict) -> list[str]:
    """blas1 / default for every figure measured both ways (time: < 1 means limiting the BLAS pool helped)."""
    lines = []
    for k, x in sorted(v.items()):
        if "/default/" not in k or k.endswith(("/threads", "/blas_pool_cpu_ms", "/blas_pool_restarts")):
            continue
        y = v.get(k.replace("/default/", "/blas1/"))
        if x and y:
            kind = "throughput" if k.endswith("img_per_s") else "time"
            lines.append(f"BLAS pool 1 thread / unlimited, {k} ({kind}): {_ratio(y, x)} ({y} vs {x})")
    return lines


def _ratio(a, b):
    return round(a / b, 2) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def print_report(rep: dict, loads: list[str]) -> None:
    s = rep["summary"]
    quiet = s.get("quiet", {})
    print(f"\nload average at each round start: {rep['uptime_load_avg']}  ({rep['cpus']} CPUs, {rep['rounds']} "
          f"rounds, {rep['minutes']} min)")
    keys = sorted({k for v in s.values() for k in v if not k.endswith("/threads")})
    print(f"\n{'figure':52} " + " ".join(f"{ld:>10}" for ld in loads) + "   " +
          " ".join(f"{ld + '/q':>9}" for ld in loads if ld != "quiet"))
    for k in keys:
        vals = [s.get(ld, {}).get(k) for ld in loads]
        ratios = [_ratio(s.get(ld, {}).get(k), quiet.get(k)) for ld in loads if ld != "quiet"]
        print(f"{k:52} " + " ".join(f"{v if v is not None else '-':>10}" for v in vals) + "   " +
              " ".join(f"{r if r is not None else '-':>9}" for r in ratios))
    print("\nratios per load:")
    for ld in loads:
        v = s.get(ld, {})
        lines = []
        for size in ("32", "224"):
            for t in ("default", "t1"):
                ts = v.get(f"predict/torchscript/{t}/{size}/inference_ms")
                pt = v.get(f"predict/pytorch/{t}/{size}/inference_ms")
                if ts and pt:
                    lines.append(f"TorchScript/eager runtime b1 @{size} {t}: {_ratio(ts, pt)}")
        e2e, floor = v.get("predict/onnx/default/224/e2e_ms"), v.get("floor/floor_ms")
        ref = v.get("reference/onnx224/e2e_ms")
        if e2e and floor:
            lines.append(f"ONNX e2e @224 / floor: {_ratio(e2e, floor)} ({e2e} vs {floor} ms)")
        if e2e and ref:
            lines.append(f"ONNX throughput ours / reference: {_ratio(ref, e2e)}x ({e2e} vs {ref} ms/img)")
        ex_o, ex_r = v.get("export/ours/wall_s"), v.get("export/reference/wall_s")
        if ex_o and ex_r:
            lines.append(f"ONNX export ours / reference: wall {_ratio(ex_o, ex_r)} ({ex_o} vs {ex_r} s), CPU "
                         f"{_ratio(v.get('export/ours/cpu_s'), v.get('export/reference/cpu_s'))}")
        lines += _blas_lines(v)
        print(f"  [{ld}] " + f"\n  [{ld}] ".join(lines))


if __name__ == "__main__":
    main()
