"""Run issue 12's adversarial corpus (tests/hostile) and print, per case: exit, peak RSS growth over the post-import
baseline, seconds, the one stderr line and any problem found. ``--json PATH`` also writes the records.

    python benchmarks/hostile_corpus.py [-k SUBSTRING] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hostile import run_case  # noqa: E402
from hostile.cases import CASES  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="", help="only cases whose id contains this")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    rows = []
    for case in CASES:
        if a.k not in case.id:
            continue
        with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
            try:
                out = run_case(case, Path(tmp))
            except BaseException as e:  # noqa: BLE001 - e.g. pytest.skip from a builder
                print(f"{case.id:34s} skipped: {e}", flush=True)
                continue
        probs = out.problems(case)
        rec = {"id": case.id, "row": case.row, "owner": case.owner, "exit": out.exit, "growth_mb": round(out.growth_mb),
               "children_mb": round(out.children_mb), "seconds": out.seconds,
               "stderr": out.stderr[0] if len(out.stderr) == 1 else out.stderr[:4], "problems": probs}
        rows.append(rec)
        print(f"{case.id:34s} exit={str(out.exit):>3s} rss+={out.growth_mb:7.0f} MB {out.seconds:6.1f}s "
              f"{'OK ' if not probs else 'BAD'} {rec['stderr']!s:.160s}" + (f"  PROBLEMS: {probs}" if probs else ""),
              flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
