"""Damaged artefacts: seeded mutants (bits flipped, cut short, a range overwritten, a length or offset inflated) of a
tiny yolov8n-cls (imgsz 32) exported to every format this machine can run, each predicted by the real CLI in a child
process (``tests/damaged``). Prints, per format, how the mutants ended: the same answer, one clean line of a project
error, a wrong answer without an error, a non-project exception, or the process taken down (exit without a project
error, out of memory, hang, signal), and then every mutant that took the process down, with its mutation.

    python benchmarks/damaged_artefacts.py --per-format 40 [--formats executorch,tflite] [--seed 0] [--fresh]
        [--workdir DIR] [--json out.json] [-v]

``--workdir`` keeps the exports between runs (they are made once). ``--fresh`` runs each mutant in a fresh
``python`` instead of a child forked from a warm worker (slow: every mutant imports its runtime). Exit 1 if any
mutant took the process down.

What the load check costs (ncnn and MNN are loaded and run once in a child before they are trusted): ``--load-cost R
--before DIR`` times ``python -m yolo_export predict`` of each intact artefact, R alternating rounds of this checkout
and of another source tree (``git archive <commit> | tar -x -C DIR; ln -s ../backends DIR/yolo_export/backends``),
and prints the medians and their ratio (no mutants are run).

    python benchmarks/damaged_artefacts.py --formats ncnn,mnn --load-cost 5 --before DIR --workdir DIR2
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from damaged import DOC, FATAL, KINDS, as_dict, run_format, tally  # noqa: E402


def artefacts(workdir: Path, formats: list[str] | None) -> dict[str, Path]:
    """{format: artefact} for every format that can export and run here, exported once into ``workdir``."""
    from backend_models import save_conditioned
    from yolo_export import YOLO, registry

    pt = workdir / "cond.pt"
    if not pt.exists():
        save_conditioned(pt)
    index = workdir / "artefacts.json"
    known = json.loads(index.read_text()) if index.exists() else {}
    out = {}
    for b in registry.all_backends():
        if (formats and b.name not in formats) or not b.runtime_available()[0] or b.missing():
            continue
        if b.is_source:
            out[b.name] = pt
            continue
        if b.name not in known or not Path(known[b.name]).exists():
            print(f"exporting {b.name}...", flush=True)
            known[b.name] = str(YOLO(pt).export(b.name, output=f"{workdir / 'out'}/", verify=False))
            index.write_text(json.dumps(known, indent=1))
        out[b.name] = Path(known[b.name])
    return out


def table(results: dict[str, list]) -> str:
    head = f"{'format':<12}{'mutants':>8}" + "".join(f"{k:>10}" for k in KINDS)
    lines = [head, "-" * len(head)]
    for fmt, outs in results.items():
        t = tally(outs)
        lines.append(f"{fmt:<12}{len(outs):>8}" + "".join(f"{t[k]:>10}" for k in KINDS))
    return "\n".join(lines)


def load_cost(arts: dict[str, Path], before: str, rounds: int, work: Path) -> None:
    """Median wall seconds of ``predict`` on each intact artefact: this checkout vs ``before``, alternating."""
    from damaged import make_image

    image = make_image(work / "image.jpg")
    for fmt, path in arts.items():
        times = {"this": [], "before": []}
        for _ in range(rounds):
            for who, pp in (("before", before), ("this", "")):
                env = {**os.environ, "PYTHONPATH": pp, "YOLO_EXPORT_NO_PLUGINS": "1"}
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "yolo_export", "predict", "-m", str(path), "-s", str(image),
                                "--json"], env=env, capture_output=True, check=True)
                times[who].append(time.perf_counter() - t)
        a, b = statistics.median(times["this"]), statistics.median(times["before"])
        print(f"{fmt:<12} predict (one image, fresh process): this {a:.2f}s, before {b:.2f}s, ratio {a / b:.2f} "
              f"(medians of {rounds}; load average {os.getloadavg()[0]:.1f})", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-format", type=int, default=40, help="mutants per format")
    ap.add_argument("--formats", default="", help="comma-separated formats (default: every one this machine runs)")
    ap.add_argument("--seed", type=int, default=0, help="first seed (mutant i uses seed + i)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a mutant counts as hung")
    ap.add_argument("--fresh", action="store_true", help="a fresh process per mutant instead of a forked child")
    ap.add_argument("--workdir", default=None, help="keep the exports here (made once)")
    ap.add_argument("--json", default=None)
    ap.add_argument("-v", "--verbose", action="store_true", help="print every mutant's outcome")
    ap.add_argument("--load-cost", type=int, default=0, help="rounds of timing predict against --before instead")
    ap.add_argument("--before", default=None, help="another source tree of this project, for --load-cost")
    a = ap.parse_args(argv)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="damaged-"))
    work.mkdir(parents=True, exist_ok=True)
    arts = artefacts(work, [f.strip() for f in a.formats.split(",") if f.strip()] or None)
    if a.load_cost:
        load_cost(arts, a.before or "", a.load_cost, work)
        return 0
    from yolo_export import registry

    results, t0 = {}, time.perf_counter()
    for fmt, path in arts.items():
        show = (lambda o, fmt=fmt: print(f"  {fmt:<12} {o.kind:<10} {o.seconds:6.2f}s {o.mutation}  {o.detail[:120]}",
                                         flush=True)) if a.verbose else None
        with tempfile.TemporaryDirectory(prefix=f"damaged-{fmt}-") as tmp:
            t = time.perf_counter()
            try:
                results[fmt] = run_format(registry.get(fmt), path, range(a.seed, a.seed + a.per_format), Path(tmp),
                                          fork=not a.fresh, timeout=a.timeout, on_outcome=show)
            except RuntimeError as e:   # the intact artefact does not predict here (e.g. TF.js without its packages)
                print(f"{fmt}: skipped: {str(e)[:300]}", flush=True)
                continue
        print(f"{fmt}: {tally(results[fmt])} in {time.perf_counter() - t:.0f}s", flush=True)
    print(f"\n{a.per_format} mutants per format, seeds {a.seed}..{a.seed + a.per_format - 1}, "
          f"{'fresh processes' if a.fresh else 'forked children'}, {time.perf_counter() - t0:.0f}s\n")
    print(table(results))
    print("\n" + "\n".join(f"  {k:<10} {v}" for k, v in DOC.items()))
    fatal = [(fmt, o) for fmt, outs in results.items() for o in outs if o.kind in FATAL]
    if fatal:
        print("\nmutants that took the process down:")
        for fmt, o in fatal:
            print(f"  {fmt:<12} {o.kind:<7} {o.mutation}  ->  {o.detail[:160]}")
    if a.json:
        Path(a.json).write_text(json.dumps({f: [as_dict(o) for o in outs] for f, outs in results.items()}, indent=1))
    return 1 if fatal else 0


if __name__ == "__main__":
    sys.exit(main())
