"""TorchScript's cost of a new input shape, with and without the graph executor's optimisation, against eager.

TorchScript's profiling executor records shapes on the first call at a shape and optimises the graph on the next;
every new batch size (val's short last batch, predict's last chunk) starts that again. On a CPU the fuser is off,
so the optimised graph may buy nothing. Each figure comes from a fresh process (one torch thread, OpenMP threads
asleep as under yolo-export's policy): yolov8n-cls (nc=10 at 32, nc=1000 at 224), the calls in order b1, b1, b1,
b32, b32, b7, b7 (ms each; b7 is a new shape), then the steady state at batch 1 and 32. Rounds alternate; medians;
quiet and next to another PyTorch job (as in ``load.py``).

    python benchmarks/torchscript_shapes.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from load import clean_env, loadavg, start_load, stop_load  # noqa: E402

SEQ = (1, 1, 1, 32, 32, 7, 7)
MODES = ("optimized", "plain", "eager")


def measure(model: str, imgsz: int, mode: str) -> dict:
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if mode == "eager":
        from yolo_export import YOLO

        m = YOLO(model).model.float().eval().fuse()
    else:
        m = torch.jit.load(model).eval()
    load_ms = (time.perf_counter() - t0) * 1e3

    def call(b: int) -> float:
        x = torch.rand(b, 3, imgsz, imgsz)
        t = time.perf_counter()
        with torch.jit.optimized_execution(mode == "optimized"), torch.inference_mode():
            m(x)
        return (time.perf_counter() - t) * 1e3

    calls = [round(call(b), 2) for b in SEQ]
    b1 = statistics.median(call(1) for _ in range(20))
    b32 = statistics.median(call(32) for _ in range(3)) / 32
    return {"load_ms": round(load_ms, 1), "calls_ms": calls, "b1_ms": round(b1, 3), "b32_ms_per_img": round(b32, 3)}


def setup(work: Path) -> dict:
    code = f"""
import json
from yolo_export import YOLO
out = {{}}
for nc, imgsz in ((10, 32), (1000, 224)):
    y = YOLO("yolov8n-cls.yaml", nc=nc)
    y.model.imgsz = imgsz
    pt = y.save({str(work)!r} + f"/m{{imgsz}}.pt")
    out[f"pt{{imgsz}}"] = pt
    out[f"ts{{imgsz}}"] = YOLO(pt).export("torchscript", imgsz=imgsz, threads=1, verify=False)
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loads", default="quiet,torch")
    a = ap.parse_args()
    if a.child:
        spec = json.loads(a.child)
        print(json.dumps(measure(spec["model"], spec["imgsz"], spec["mode"])))
        return
    tmp = tempfile.TemporaryDirectory()
    models = setup(Path(tmp.name))
    loads, res, lavg = a.loads.split(","), {}, {}
    jobs = [(mode, imgsz) for imgsz in (32, 224) for mode in MODES]
    for r in range(a.rounds):
        for load in (loads if r % 2 == 0 else loads[::-1]):
            procs = start_load(load)
            lavg.setdefault(load, []).append(round(loadavg(), 2))
            try:
                for mode, imgsz in jobs[r % len(jobs):] + jobs[:r % len(jobs)]:
                    model = models[("pt" if mode == "eager" else "ts") + str(imgsz)]
                    spec = json.dumps({"model": model, "imgsz": imgsz, "mode": mode})
                    p = subprocess.run([sys.executable, str(HERE), "--child", spec], capture_output=True, text=True,
                                       env=clean_env())
                    out = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {"error": p.stderr}
                    res.setdefault((load, mode, imgsz), []).append(out)
                    print(f"round {r + 1} {load} {mode} {imgsz} {json.dumps(out)}", file=sys.stderr)
            finally:
                stop_load(procs)
    print(f"\nload average at each round start: {lavg}; medians of {a.rounds} rounds; calls: {SEQ}")
    for (load, mode, imgsz), rows in sorted(res.items()):
        ok = [x for x in rows if "error" not in x]
        if not ok:
            print(f"{load:6} {mode:10} {imgsz:4} error: {rows[0]['error'][-200:]}")
            continue
        calls = [round(statistics.median(x["calls_ms"][i] for x in ok), 1) for i in range(len(SEQ))]
        print(f"{load:6} {mode:10} {imgsz:4} calls {calls}  steady b1 {statistics.median(x['b1_ms'] for x in ok):.3f}"
              f" ms, b32 {statistics.median(x['b32_ms_per_img'] for x in ok):.3f} ms/img")


if __name__ == "__main__":
    main()
