"""Run every fuzz target deterministically (fixed ``-seed``, fixed ``-runs``, the seed corpus in tests/fuzz/corpus) and
print executions per second and coverage per target; exit non-zero on any finding (a crash, an uncaught exception
other than the project's errors, a multi-line error, a memory cap hit, a timeout). New inputs go to a temporary
folder, never into the repository.

    python tests/fuzz/run.py                      # the CI budget (about 15 s a target here)
    python tests/fuzz/run.py --scale 20 -t tflite_metadata --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Runs per target for the CI budget: 15-20 s each measured on the shared 2-core machine under heavy load (less on CI).
RUNS = {"metadata_decode": 20000, "metadata_yaml": 5000, "json_document": 30000, "tensorrt_header": 20000,
        "pte_trailer": 20000, "tflite_metadata": 10000, "torchscript_metadata": 10000, "tfjs_manifest": 20000,
        "checkpoint": 1000}

# Targets whose reader another branch is rewriting: a finding is printed, and fails the run only with --strict.
PENDING: dict[str, str] = {}


def run_target(name: str, runs: int, seed: int = 1, max_time: int = 120) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as new:
        cmd = [sys.executable, str(HERE / "fuzz.py"), name, f"-runs={runs}", f"-seed={seed}", "-print_final_stats=1",
               f"-max_total_time={max_time}", "-timeout=20", "-rss_limit_mb=3072", "-max_len=8192",
               f"-artifact_prefix={new}/", new, str(HERE / "corpus" / name)]
        env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        secs = time.perf_counter() - t0
        crashes = [f.name for f in Path(new).glob("crash-*")] + [f.name for f in Path(new).glob("oom-*")]
    err = p.stderr
    done = re.findall(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+)", err)
    stat = dict(re.findall(r"stat::(\w+):\s+(\d+)", err))
    execs = int(stat.get("number_of_executed_units", done[-1][0] if done else 0))
    fuzz_secs = max(secs, 1e-9)
    rec = {"target": name, "exit": p.returncode, "runs": execs, "seconds": round(secs, 1),
           "execs_per_s": round(execs / fuzz_secs), "cov": int(done[-1][1]) if done else None,
           "ft": int(done[-1][2]) if done else None, "peak_rss_mb": int(stat.get("peak_rss_mb", 0)),
           "finding": p.returncode != 0 or bool(crashes)}
    if rec["finding"]:
        tail = [ln for ln in err.splitlines() if ln and not ln.startswith("INFO: Instrumenting")][-25:]
        rec["log"] = tail
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-t", "--target", action="append", help="only these targets (repeatable)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every run count (longer runs: benchmarks/)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-time", type=int, default=120, help="seconds per target, a backstop on a slow machine")
    ap.add_argument("--strict", action="store_true", help="findings in PENDING targets fail the run too")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    names = a.target or list(RUNS)
    recs = []
    for n in names:
        r = run_target(n, max(1, int(RUNS[n] * a.scale)), a.seed, a.max_time)
        recs.append(r)
        print(f"{n:22s} runs={r['runs']:>7} {r['seconds']:6.1f}s {r['execs_per_s']:>6}/s cov={r['cov']} "
              f"ft={r['ft']} rss={r['peak_rss_mb']}MB {_verdict(r)}", flush=True)
        for ln in r.get("log", []):
            print("    " + ln)
    if a.json:
        Path(a.json).write_text(json.dumps(recs, indent=1))
    return 1 if any(r["finding"] and (a.strict or r["target"] not in PENDING) for r in recs) else 0


def _verdict(r: dict) -> str:
    if not r["finding"]:
        return "ok"
    return f"FINDING (pending: {PENDING[r['target']]})" if r["target"] in PENDING else "FINDING"


if __name__ == "__main__":
    sys.exit(main())
