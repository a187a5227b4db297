"""ONNX export wall and CPU time against the reference package's, parity check included, and where ours goes.

The same checkpoint (the reference package's own yolov8n-cls, nc=1000, made in its venv) is exported to ONNX at 224
by ``yexport m.pt --format onnx --imgsz 224`` (with the parity check, as a user runs it) and by the reference
package's ``yolo export model=m.pt format=onnx imgsz=224``, each a fresh process in a fresh folder. Rounds
alternate the order, quiet and next to another PyTorch job (a loop of 384x384 matmuls with torch's default
threads, as in ``load.py``); the tables give medians and ratios (ours / reference).

Each round also runs one instrumented export of ours in-process and splits its time into phases (exclusive
seconds: a phase's figure leaves out the phases and first imports inside it), so the breakdown and the totals come
from the same run. ``--before DIR`` adds a third contender: another source tree of this project (e.g. an older
commit unpacked with ``git archive``, with ``yolo_export/backends`` linked to its ``backends/``), run through the
same interpreter with ``PYTHONPATH=DIR``.

    python benchmarks/export_time.py --rounds 5
    python benchmarks/export_time.py --quick --before /tmp/base   # 3 rounds; before / after / reference
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from load import clean_env, loadavg, start_load, stop_load, timed_cmd  # noqa: E402

WATCH = ("torch", "torch.onnx", "onnx", "onnxruntime", "onnxslim", "onnxsim", "yolo_export.cli")


class Clock:
    """Exclusive seconds per named region; regions nest (a parent's figure leaves out its children's)."""

    def __init__(self):
        self.stack: list[list] = []
        self.excl: dict[str, float] = {}

    def run(self, name: str, fn, *a, **kw):
        self.stack.append([name, time.perf_counter(), 0.0])
        try:
            return fn(*a, **kw)
        finally:
            name, t0, inner = self.stack.pop()
            dt = time.perf_counter() - t0
            self.excl[name] = self.excl.get(name, 0.0) + dt - inner
            if self.stack:
                self.stack[-1][2] += dt

    def wrap(self, owner, attr: str, name: str) -> None:
        fn = getattr(owner, attr)

        def timed(*a, **kw):
            return self.run(name, fn, *a, **kw)

        setattr(owner, attr, timed)


def _hook_imports(clock: Clock) -> None:
    """First imports of the watched modules count as their own regions (torch.onnx loads through importlib)."""
    import builtins
    import importlib

    orig_import, orig_module = builtins.__import__, importlib.import_module

    def imp(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name in WATCH and name not in sys.modules:
            return clock.run(f"import {name}", orig_import, name, globals, locals, fromlist, level)
        return orig_import(name, globals, locals, fromlist, level)

    def import_module(name, package=None):
        full = f"{package}{name}" if package and name.startswith(".") else name
        if full in WATCH and full not in sys.modules:
            mod = clock.run(f"import {full}", orig_module, name, package)
            if full == "torch.onnx":
                clock.wrap(mod, "export", "trace (torch.onnx.export)")
            return mod
        return orig_module(name, package)

    builtins.__import__, importlib.import_module = imp, import_module


def breakdown(model: str) -> dict:
    """One export of ours in this process, split into phases (run in a child, from the export's folder)."""
    t_start = time.perf_counter()
    clock = Clock()
    _hook_imports(clock)
    import yolo_export.cli as cli  # noqa: F401 - what the console script imports first
    import yolo_export.engine.exporter as ex
    import yolo_export.engine.model as em
    import yolo_export.verify as vf
    from yolo_export import registry

    onnx_backend = type(registry.get("onnx"))
    mod = sys.modules[onnx_backend.__module__]
    clock.wrap(em.YOLO, "__init__", "read checkpoint, build model")
    clock.wrap(ex, "plan_output", "plan output")
    clock.wrap(ex, "export", "export: the rest (copy, fuse, metadata dict, move)")
    clock.wrap(onnx_backend, "export", "onnx backend: the rest (load, check, save)")
    for fn, label in (("simplify", "simplify"), ("set_metadata", "metadata")):
        if hasattr(mod, fn):
            clock.wrap(mod, fn, label)
    clock.wrap(vf, "verify_artefact", "parity check")
    clock.wrap(onnx_backend, "write_metadata", "write metadata")
    if "torch.onnx" in sys.modules:
        clock.wrap(sys.modules["torch.onnx"], "export", "trace (torch.onnx.export)")
    code = 0
    try:
        cli.main([model, "--format", "onnx", "--imgsz", "224"])
    except SystemExit as e:
        code = e.code
    total = time.perf_counter() - t_start
    phases = {k: round(v, 3) for k, v in sorted(clock.excl.items(), key=lambda kv: -kv[1])}
    phases["other (CLI, logging, GC)"] = round(total - sum(clock.excl.values()), 3)
    return {"phases": phases, "in_process_s": round(total, 3), "exit": code}


def make_checkpoint(work: Path, ref_python: str) -> Path:
    ckpt = work / "ref224.pt"
    code = f"from ultralytics import YOLO; YOLO('yolov8n-cls.yaml').save({str(ckpt)!r})"
    r = subprocess.run([ref_python, "-c", code], capture_output=True, text=True, env=clean_env(YOLO_OFFLINE="1"))
    if r.returncode != 0:
        raise SystemExit(f"the reference package could not make its checkpoint: {r.stderr.strip()[-300:]}")
    return ckpt


def commands(a) -> dict:
    py = sys.executable
    out = {"ours": ([py, "-m", "yolo_export", "m.pt", "--format", "onnx", "--imgsz", "224"], {}),
           "reference": ([str(Path(a.ref_python).with_name("yolo")), "export", "model=m.pt", "format=onnx",
                          "imgsz=224"], {"YOLO_OFFLINE": "1"})}
    if a.before:
        out["before"] = (out["ours"][0], {"PYTHONPATH": str(Path(a.before).resolve())})
    return out


def one_round(r: int, load: str, a, ckpt: Path, work: Path, res: dict) -> None:
    cmds = commands(a)
    names = list(cmds)
    order = names[r % len(names):] + names[:r % len(names)]
    for who in order + ["breakdown"]:
        d = work / f"{load}-{r}-{who}"
        d.mkdir()
        shutil.copyfile(ckpt, d / "m.pt")
        if who == "breakdown":
            p = subprocess.run([sys.executable, str(HERE), "--child", "m.pt"], cwd=d, env=clean_env(),
                               capture_output=True, text=True)
            out = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {"error": p.stderr[-300:]}
        else:
            cmd, env = cmds[who]
            out = timed_cmd(cmd, d, clean_env(**env))
        res.setdefault(load, {}).setdefault(who, []).append(out)
        print(f"round {r + 1} {load:6} {who:10} {json.dumps(out)}", file=sys.stderr)
        shutil.rmtree(d, ignore_errors=True)


def med(rows, *keys):
    vals = []
    for row in rows:
        for k in keys:
            row = row.get(k) if isinstance(row, dict) else None
        if isinstance(row, (int, float)):
            vals.append(row)
    return round(statistics.median(vals), 3) if vals else None


def report(res: dict, lavg: dict, a) -> dict:
    summary = {}
    for load, per in res.items():
        s = summary.setdefault(load, {})
        for who in per:
            if who == "breakdown":
                names = {k for row in per[who] for k in row.get("phases", {})}
                s["phases"] = {k: med(per[who], "phases", k) for k in names}
                s["in_process_s"] = med(per[who], "in_process_s")
                continue
            s[who] = {"wall_s": med(per[who], "wall_s"), "cpu_s": med(per[who], "cpu_s"),
                      "errors": [row["error"] for row in per[who] if "error" in row]}
        ref = s.get("reference", {})
        for who in ("ours", "before"):
            if who in s and ref.get("wall_s"):
                s[f"{who}/reference"] = {"wall": round(s[who]["wall_s"] / ref["wall_s"], 3),
                                         "cpu": round(s[who]["cpu_s"] / ref["cpu_s"], 3)}
    print(f"\nload average at each round start: {lavg}  ({os.cpu_count()} CPUs, {a.rounds} rounds, medians)")
    for load, s in summary.items():
        print(f"\n[{load}]")
        for who in ("ours", "before", "reference"):
            if who in s:
                ratio = s.get(f"{who}/reference", {})
                print(f"  {who:10} wall {s[who]['wall_s']} s, CPU {s[who]['cpu_s']} s"
                      + (f"   / reference: wall {ratio['wall']}x, CPU {ratio['cpu']}x" if ratio else ""))
        print(f"  where ours goes (in-process {s.get('in_process_s')} s, exclusive seconds):")
        for k, v in sorted(s.get("phases", {}).items(), key=lambda kv: -(kv[1] or 0)):
            print(f"    {k:52} {v}")
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3 rounds")
    ap.add_argument("--loads", default="quiet,torch")
    ap.add_argument("--ref-python", default="/tmp/refvenv/bin/python")
    ap.add_argument("--before", help="another source tree of this project to time beside this one")
    ap.add_argument("--json", help="write every measurement here")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(breakdown(a.child)))
        return
    if a.quick:
        a.rounds = 3
    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    ckpt = make_checkpoint(work, a.ref_python)
    res: dict = {}
    lavg: dict = {}
    loads = a.loads.split(",")
    for r in range(a.rounds):
        for load in (loads if r % 2 == 0 else loads[::-1]):
            procs = start_load(load)
            lavg.setdefault(load, []).append(round(loadavg(), 2))
            try:
                one_round(r, load, a, ckpt, work, res)
            finally:
                stop_load(procs)
    summary = report(res, lavg, a)
    if a.json:
        Path(a.json).write_text(json.dumps({"load_avg": lavg, "summary": summary, "raw": res}, indent=1))


if __name__ == "__main__":
    main()
