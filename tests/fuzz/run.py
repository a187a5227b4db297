"""Run every fuzz target deterministically (fixed ``-seed``, fixed ``-runs``, the seed corpus in tests/fuzz/corpus) and
print executions per second and coverage per target; exit non-zero on any finding (a crash, an uncaught exception
other than the project's errors, a multi-line error, a memory cap hit, a timeout), and when a target covers fewer
edges than its floor in tests/fuzz/coverage_floor.json (a target gone blind: e.g. a reader that now refuses every
seed at its first check still says "ok" to every input). New inputs go to a temporary folder, never into the
repository.

    python tests/fuzz/run.py                      # the CI budget (about 15 s a target here)
    python tests/fuzz/run.py --scale 20 -t tflite_metadata --json out.json
    python tests/fuzz/run.py --write-floor        # after an intended coverage change: new floors, commit the file

The floor is ``FLOOR_MARGIN`` times the least edges of three CI-budget runs (libFuzzer's edge count of the
instrumented project, PyYAML and zipfile code; with the same seed and run count it still varies between runs, by up
to 10% for tflite_metadata). When a reader change lowers a target's coverage on purpose, or a new target is added,
run ``--write-floor`` (every target, or ``-t NAME``; about 3 minutes for all) and say in the commit why the figure
moved; a drop nobody intended is the finding: fix the target or its seeds instead.
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
FLOOR_FILE = HERE / "coverage_floor.json"
FLOOR_MARGIN = 0.8    # below the least of 3 runs: one target's count varies by up to 10% between runs (283-312)


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
    rec = {"target": name, "exit": p.returncode, "runs": execs, "requested": runs, "seconds": round(secs, 1),
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
    ap.add_argument("--write-floor", action="store_true",
                    help=f"write these targets' floors: {FLOOR_MARGIN} x the least edges of --repeat runs")
    ap.add_argument("--repeat", type=int, default=None, help="runs per target (default 1; 3 with --write-floor)")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if a.write_floor and (a.scale != 1 or a.seed != 1):
        ap.error("--write-floor measures CI's budget: no --scale or --seed with it")
    names = a.target or list(RUNS)
    floors = load_floors()
    check_floor = a.scale >= 1 and not a.write_floor   # fewer runs than CI's may cover less: no floor then
    recs = []
    for n in names:
        runs = [run_target(n, max(1, int(RUNS[n] * a.scale)), a.seed, a.max_time)
                for _ in range(a.repeat or (3 if a.write_floor else 1))]
        r = min(runs, key=lambda x: (not x["finding"], x["cov"] or 0))   # a finding first, else the least coverage
        r["floor"] = floors.get(n)
        r["blind"] = below_floor(r, floors.get(n)) if check_floor and not r["finding"] else None
        recs.append(r)
        print(f"{n:22s} runs={r['runs']:>7} {r['seconds']:6.1f}s {r['execs_per_s']:>6}/s cov={r['cov']} "
              f"ft={r['ft']} rss={r['peak_rss_mb']}MB {_verdict(r)}", flush=True)
        for ln in r.get("log", []):
            print("    " + ln)
    if a.json:
        Path(a.json).write_text(json.dumps(recs, indent=1))
    if a.write_floor:
        return write_floors(recs, floors)
    findings = [r for r in recs if r["finding"] and (a.strict or r["target"] not in PENDING)]
    for r in recs:
        if r["blind"]:
            print(f"COVERAGE BELOW FLOOR: {r['blind']}", file=sys.stderr)
    return 1 if findings or any(r["blind"] for r in recs) else 0


def load_floors() -> dict[str, int]:
    if not FLOOR_FILE.is_file():
        return {}
    return {k: int(v) for k, v in json.loads(FLOOR_FILE.read_text())["floor"].items()}


def below_floor(r: dict, floor: int | None) -> str | None:
    """Why this run's coverage cannot be trusted, or None: fewer edges than the floor, no floor, no edge count."""
    name = r["target"]
    if floor is None:
        return f"{name}: no floor in {FLOOR_FILE.name} (run tests/fuzz/run.py --write-floor -t {name})"
    if r["cov"] is None:
        return f"{name}: the fuzzer printed no edge count, so its coverage cannot be checked against the floor {floor}"
    if r["cov"] >= floor:
        return None
    short = ""
    if r["runs"] < r["requested"]:
        short = f"; cut short by --max-time after {r['runs']} of {r['requested']} runs"
    return (f"{name} covered {r['cov']} edges, below its floor of {floor}{short}: the target has gone blind (its "
            f"reader may now refuse the seeds early); fix the target or its seeds, or if intended: --write-floor")


def write_floors(recs: list[dict], floors: dict[str, int]) -> int:
    if any(r["finding"] or r["cov"] is None for r in recs):
        print("not writing floors: a target had a finding or no edge count", file=sys.stderr)
        return 1
    old = json.loads(FLOOR_FILE.read_text()) if FLOOR_FILE.is_file() else {}
    measured = {**old.get("measured", {}), **{r["target"]: r["cov"] for r in recs}}
    floors = {**floors, **{r["target"]: int(r["cov"] * FLOOR_MARGIN) for r in recs}}
    doc = {"about": "Least edges each fuzz target must cover in `python tests/fuzz/run.py` (CI's budget): "
                    f"{FLOOR_MARGIN} x `measured`, the least of 3 runs. Update with `python tests/fuzz/run.py "
                    "--write-floor [-t NAME]` (see its docstring).",
           "floor": {n: floors[n] for n in RUNS if n in floors},
           "measured": {n: measured[n] for n in RUNS if n in measured}}
    FLOOR_FILE.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {FLOOR_FILE}")
    return 0


def _verdict(r: dict) -> str:
    if r.get("blind"):
        return f"BELOW FLOOR {r['floor']}" if r["floor"] is not None and r["cov"] is not None else "NO FLOOR CHECK"
    if not r["finding"]:   # --max-time is a backstop: a run it cut short is reported, and still held to the floor
        return "ok" if r["runs"] >= r["requested"] else f"ok (cut short by --max-time: {r['runs']} runs)"
    return f"FINDING (pending: {PENDING[r['target']]})" if r["target"] in PENDING else "FINDING"


if __name__ == "__main__":
    sys.exit(main())
