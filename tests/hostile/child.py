"""Run ``python -m yolo_export ARGS`` under a memory budget and record how much memory the command itself used.

    python tests/hostile/child.py RESULT.json MOD1,MOD2 -- ARGS...

Imports the listed modules first (what the command would import anyway: torch, onnx...), takes the peak RSS after
them as the baseline, caps the address space at (current size + ``HOSTILE_AS_HEADROOM`` bytes, default 1 GiB) as a
backstop, then runs the real CLI entry point (``runpy`` of ``yolo_export.__main__``, exactly what ``python -m`` does).
RESULT.json gets ``baseline_kb``, ``peak_kb``, ``growth_kb``, ``children_peak_kb`` and ``exit``; stderr is left to
the command alone.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import runpy
import sys


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def main() -> int:
    result, mods, sep, *args = sys.argv[1:]
    assert sep == "--"
    for m in filter(None, mods.split(",")):
        importlib.import_module(m)
    importlib.import_module("yolo_export.cli")
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    headroom = int(os.environ.get("HOSTILE_AS_HEADROOM", 1 << 30))
    cap = _vm_size() + headroom
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    sys.argv = ["yolo_export", *args]
    code: int | str = 0
    try:
        runpy.run_module("yolo_export", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 - recorded; the harness fails the case
        code = f"uncaught {type(e).__name__}"
        sys.stderr.write(f"uncaught {type(e).__name__}: {e}\n")
    finally:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        with open(result, "w") as f:
            json.dump({"baseline_kb": baseline, "peak_kb": peak, "growth_kb": peak - baseline,
                       "children_peak_kb": kids, "as_cap": cap, "exit": code}, f)
    return code if isinstance(code, int) else 70


if __name__ == "__main__":
    sys.exit(main())
