"""Longer fuzzing than CI's budget: every target (or -t TARGET) with run counts scaled up and a new seed each round.

    python benchmarks/fuzz_long.py --scale 20 --rounds 3 [-t tflite_metadata] [--json out.json]

Prints executions per second, coverage (libFuzzer's cov/ft on the instrumented project, PyYAML and zipfile code) and
any finding per target and round; a finding leaves its input in the temporary folder named in the log and can be
replayed with ``python tests/fuzz/repro.py TARGET FILE``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))

import run  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-t", "--target", action="append")
    ap.add_argument("--scale", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-time", type=int, default=1800)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    recs = []
    for r in range(a.rounds):
        for name in a.target or list(run.RUNS):
            rec = run.run_target(name, int(run.RUNS[name] * a.scale), seed=1000 + r, max_time=a.max_time)
            recs.append({**rec, "round": r})
            print(f"round {r} {name:22s} runs={rec['runs']:>8} {rec['seconds']:7.1f}s {rec['execs_per_s']:>6}/s "
                  f"cov={rec['cov']} ft={rec['ft']} {run._verdict(rec)}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(recs, indent=1))
    return 1 if any(r["finding"] for r in recs) else 0


if __name__ == "__main__":
    sys.exit(main())
