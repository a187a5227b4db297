"""Load test of ``yexport serve`` with a real HTTP client (httpx, asyncio) against the real server process.

yolov8n-cls (nc=1000, random init) exported to ONNX at imgsz 224 with a dynamic batch; 640x480 JPEGs. For dynamic
batching on (``--max-batch 16``) and off (``--max-batch 1``), at concurrency 1, 8 and 32: requests/s, p50/p99
latency, failures, and the CPU seconds used by the load client and by the server (they share the cores). The
baseline is in-process ``YOLO(model).predict(folder, batch=B)`` on the same images in the same run. Then the
bad-input battery of ``tests/test_serve.py`` (every request must get a 4xx JSON error) is sent ``--battery`` times
and the server's RSS is read before and after.

    python benchmarks/serve_load.py [--images 64] [--requests 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def proc_cpu_s(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


async def load(url: str, bodies: list[bytes], concurrency: int, n: int) -> dict:
    import httpx

    lat, fails, next_i = [], [], 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def worker():
            nonlocal next_i
            while next_i < n:
                i = next_i
                next_i += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, content=bodies[i % len(bodies)],
                                          headers={"content-type": "image/jpeg"})
                    ok = r.status_code == 200 and len(r.json()) == 1
                except Exception as e:  # noqa: BLE001 - counted as a failure
                    ok, r = False, e
                lat.append(time.perf_counter() - t0)
                if not ok:
                    fails.append(str(getattr(r, "status_code", r)))

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    lat.sort()
    return {"concurrency": concurrency, "requests": n, "failed": len(fails), "req_per_s": round(n / wall, 2),
            "p50_ms": round(1e3 * lat[len(lat) // 2], 1), "p99_ms": round(1e3 * lat[min(len(lat) - 1,
                                                                                        int(len(lat) * 0.99))], 1),
            "wall_s": round(wall, 2), "fail_samples": fails[:3]}


def run_server(model, port, *args):
    from test_serve import Server

    s = Server.__new__(Server)
    s.port, s.url = port, f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "yolo_export", "serve", str(model), "--port", str(port), *args]
    s.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    import httpx

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(s.url + "/ready", timeout=2).status_code == 200:
                return s
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit("server did not become ready")


def in_process(model, folder, batch, rounds=2) -> dict:
    """Best images/s of in-process predict, and its CPU ms per image (all threads of this process)."""
    from yolo_export import YOLO

    y = YOLO(model)
    y.predict(str(folder), batch=batch)  # warm up
    best, cpu_ms = 0.0, []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), cpu_s()
        n = len(y.predict(str(folder), batch=batch))
        best = max(best, n / (time.perf_counter() - t0))
        cpu_ms.append(1e3 * (cpu_s() - c0) / n)
    return {"img_per_s": round(best, 2), "cpu_ms_per_img": round(min(cpu_ms), 2)}


def battery(s, times: int) -> dict:
    import httpx
    from test_serve import bad_requests, is_error_doc

    statuses, bad = {}, []
    rss0 = s.rss_mb()
    for _ in range(times):
        for what, kw, want, kind in bad_requests(limit_mb=20, max_images=16):
            r = httpx.post(s.url + "/predict", timeout=60, **kw)
            try:
                is_json = is_error_doc(r.json(), kind)
            except ValueError:
                is_json = False
            statuses[what] = [r.status_code, kind]
            if not (400 <= r.status_code < 500 and is_json and r.status_code == want):
                bad.append((what, r.status_code))
    alive = httpx.get(s.url + "/health").status_code == 200
    return {"rounds": times, "cases": len(statuses), "statuses": statuses, "not_4xx_json": bad,
            "rss_mb_before": round(rss0, 1), "rss_mb_after": round(s.rss_mb(), 1), "alive_after": alive}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--requests", type=int, default=256, help="requests per concurrency level (c=1 uses a quarter)")
    ap.add_argument("--battery", type=int, default=5, help="rounds of the bad-input battery")
    ap.add_argument("--json")
    a = ap.parse_args(argv)

    from predict_throughput import make_jpegs
    from test_serve import free_port

    from yolo_export import YOLO

    work = Path(tempfile.mkdtemp(prefix="yexport-serve-"))
    (work / "images").mkdir()
    make_jpegs(work / "images", a.images)
    bodies = [p.read_bytes() for p in sorted((work / "images").glob("*.jpg"))]
    import torch

    torch.manual_seed(0)
    src = YOLO("yolov8n-cls.yaml")
    src.save(work / "n1000.pt")
    model = YOLO(work / "n1000.pt").export("onnx", imgsz=224, dynamic=True, batch=32, verify=False)
    out = {"uptime_before": os.popen("uptime").read().strip(), "images": a.images, "model": "yolov8n-cls nc=1000 "
           "ONNX imgsz 224 dynamic batch", "jpeg": "640x480",
           "in_process_img_per_s": {f"batch{b}": in_process(model, work / "images", b) for b in (1, 8)}}
    out["runs"] = []
    for label, args in (("batching on (--max-batch 16)", ["--max-batch", "16", "--batch-wait-ms", "2"]),
                        ("batching off (--max-batch 1)", ["--max-batch", "1"])):
        s = run_server(model, free_port(), *args)
        try:
            asyncio.run(load(s.url + "/predict", bodies, 4, 16))  # warm up
            for c in (1, 8, 32):
                c0, s0 = cpu_s(), proc_cpu_s(s.proc.pid)
                r = asyncio.run(load(s.url + "/predict", bodies, c, a.requests // 4 if c == 1 else a.requests))
                r.update(mode=label, client_cpu_s=round(cpu_s() - c0, 2),
                         server_cpu_s=round(proc_cpu_s(s.proc.pid) - s0, 2))
                r["client_cpu_share"] = round(r["client_cpu_s"] / max(r["client_cpu_s"] + r["server_cpu_s"], 1e-9), 3)
                r["server_cpu_ms_per_req"] = round(1e3 * r["server_cpu_s"] / r["requests"], 2)
                out["runs"].append(r)
                print(json.dumps(r), flush=True)
            if label.startswith("batching on"):
                out["battery"] = battery(s, a.battery)
                print(json.dumps(out["battery"]), flush=True)
        finally:
            s.stop()
    best = max(v["img_per_s"] for v in out["in_process_img_per_s"].values())
    c32 = max(r["req_per_s"] for r in out["runs"] if r["concurrency"] == 32)
    out["c32_over_in_process_best"] = round(c32 / best, 3)
    out["uptime_after"] = os.popen("uptime").read().strip()
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
