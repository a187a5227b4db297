"""The fuzz step's coverage floor (tests/fuzz/run.py, tests/fuzz/coverage_floor.json): every target has a floor below
what it measured, and a run under its floor, or with no edge count or no floor, is refused with one line naming the
target, its edges and its floor. (The fuzzing itself runs in CI's fuzz step, not here.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import run  # noqa: E402


def test_every_target_has_a_floor_under_what_it_measured():
    doc = json.loads(run.FLOOR_FILE.read_text())
    assert set(doc["floor"]) == set(run.RUNS) == set(doc["measured"])
    for name, floor in doc["floor"].items():
        assert 0 < floor == int(doc["measured"][name] * run.FLOOR_MARGIN), name


def _rec(cov, runs=1000, requested=1000):
    return {"target": "pte_trailer", "cov": cov, "runs": runs, "requested": requested, "finding": False}


def test_a_blind_target_is_named_with_its_edges_and_floor():
    assert run.below_floor(_rec(96), 96) is None
    msg = run.below_floor(_rec(12), 96)
    assert msg.startswith("pte_trailer covered 12 edges, below its floor of 96") and "\n" not in msg
    assert "cut short by --max-time after 10 of 1000 runs" in run.below_floor(_rec(12, runs=10), 96)
    assert "no edge count" in run.below_floor(_rec(None), 96)
    assert "no floor" in run.below_floor(_rec(120), None)
