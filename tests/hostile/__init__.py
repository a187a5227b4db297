"""The adversarial corpus: every attack of issue 12's table and its "already safe" list, as generated files.

Each :class:`Case` builds its file(s) in a fresh sandbox and names the ``yexport`` command that reads them. The
harness (:func:`run_case`) runs that command through the real CLI in a child process (``tests/hostile/child.py``:
baseline RSS after imports, address space capped at baseline + 1 GiB) and reports what the payload would have
left behind: a marker file, an overwritten file outside the case folder, a read of a secret file beside it (Linux
inotify sees reads by native code and child processes too), new files outside the allowed places, the exit code,
the stderr lines and the memory growth.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = HERE / "child.py"
GIB = 1 << 30
BASE_IMPORTS = "numpy,PIL.Image,yaml,torch"


@dataclass
class Sandbox:
    root: Path
    env_extra: dict = field(default_factory=dict)   # a builder's environment for the command (mirror, manifest)

    @property
    def case(self) -> Path:
        return self.root / "case"

    @property
    def marker(self) -> Path:
        return self.root / "PWNED"

    @property
    def secret(self) -> Path:
        return self.root / "outside" / "secret.txt"

    @property
    def victim(self) -> Path:
        return self.root / "outside" / "victim.txt"

    @property
    def payload(self) -> str:
        """A shell command that leaves the marker behind."""
        return f"touch {self.marker}"

    def make(self) -> Sandbox:
        for d in ("case", "outside", "home", "cache"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.secret.write_text("SECRET " * 64)
        self.victim.write_text("the victim's original content\n")
        return self


@dataclass
class Case:
    id: str
    row: str                      # "1".."12" for the table, "safe" for the already-safe list
    build: Callable[[Sandbox], list[str]]
    expect: str = ""              # a substring the one stderr line must contain (case-insensitive)
    owner: str | None = None      # who lands the fix (xfail until it lands); None: must pass now
    needs: tuple[str, ...] = ()   # modules the case needs installed
    imports: str = ""             # extra modules the command imports (measured before the baseline)
    env: dict = field(default_factory=dict)
    exit_zero: bool | None = False   # True: must succeed (a bomb skipped in a folder); None: either outcome
    timeout: float = 180.0
    allowed: tuple[str, ...] = ("cache", "home", "case")   # where the command may create files
    stdout: str = ""              # what a successful command must print (e.g. the good image beside a bomb)
    progress: tuple[str, ...] = ()  # prefixes of progress lines the command logs before it fails (not errors)


@dataclass
class Outcome:
    exit: int | str
    stderr: list[str]
    stdout: str
    growth_mb: float
    children_mb: float
    marker: bool
    victim_changed: bool
    touched: dict
    new_files: list[str]
    seconds: float

    def problems(self, case: Case) -> list[str]:
        out = []
        errs = [ln for ln in self.stderr if not ln.startswith(case.progress or ("\0",))]
        if self.marker:
            out.append("the payload ran (marker file exists)")
        if self.victim_changed:
            out.append("a file outside the case folder was overwritten")
        if self.touched:
            out.append(f"files outside the case folder were touched: {self.touched}")
        if self.new_files:
            out.append(f"files written outside their place: {self.new_files[:5]}")
        if self.growth_mb >= 1024:
            out.append(f"peak RSS grew by {self.growth_mb:.0f} MB (>= 1 GB)")
        failed = self.exit != 0
        if case.exit_zero:
            if failed:
                out.append(f"exit {self.exit}, expected 0; stderr: {errs[-3:]}")
            if case.stdout and case.stdout not in self.stdout:
                out.append(f"stdout does not mention {case.stdout!r}: {self.stdout[:200]!r}")
        elif case.exit_zero is False or failed:
            if self.exit == 0 or not isinstance(self.exit, int):
                out.append(f"exit {self.exit!r}, expected a non-zero exit")
            if len(errs) != 1:
                out.append(f"{len(errs)} stderr lines, expected one: {errs[:6]}")
        line = errs[0] if errs else ""
        if failed and "traceback" in "\n".join(errs).lower():
            out.append("a traceback was printed")
        if failed and re.match(r"error: [A-Za-z_.]*(Error|Exception)\b", line):
            out.append(f"an internal exception class name reached the user: {line!r}")
        if failed and case.expect and case.expect.lower() not in line.lower():
            out.append(f"stderr line {line!r} does not mention {case.expect!r}")
        return out


def _snapshot(root: Path, allowed: tuple[str, ...]) -> set[str]:
    out = set()
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        rel = Path(dirpath).relative_to(root)
        if rel.parts and rel.parts[0] in allowed:
            continue
        out.update(str(rel / f) for f in files)
    return out


def run_case(case: Case, root: Path) -> Outcome:
    from .watch import Watch

    sb = Sandbox(root).make()
    args = case.build(sb)
    before = _snapshot(sb.root, case.allowed)
    victim = hashlib.sha256(sb.victim.read_bytes()).hexdigest()
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_EXPORT_")}
    env.update({"HOME": str(sb.root / "home"), "XDG_CACHE_HOME": str(sb.root / "cache"),
                "YOLO_EXPORT_CACHE": str(sb.root / "cache" / "yolo-export"), "YOLO_EXPORT_NO_PLUGINS": "1",
                "YOLO_EXPORT_OFFLINE": "", "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1",
                "OMP_NUM_THREADS": "1", "COLUMNS": "200"})
    env.update(case.env)
    env.update(sb.env_extra)
    result = sb.root / "result.json"
    imports = ",".join(filter(None, [BASE_IMPORTS, case.imports]))
    cmd = [sys.executable, str(CHILD), str(result), imports, "--", *args]
    watch = Watch([sb.secret, sb.victim])
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=sb.case, env=env, capture_output=True, text=True, timeout=case.timeout)
        code, err, out = p.returncode, p.stderr, p.stdout
    except subprocess.TimeoutExpired as e:
        code, err, out = f"timeout after {case.timeout:g}s", (e.stderr or b"").decode(errors="replace"), ""
    seconds = time.perf_counter() - t0
    touched = {Path(k).name: sorted(v) for k, v in watch.touched().items()}
    watch.close()
    rec = json.loads(result.read_text()) if result.exists() else {}
    after = _snapshot(sb.root, case.allowed + ("result.json",))
    new = sorted(after - before - {"result.json"})
    return Outcome(exit=code, stderr=[ln for ln in err.splitlines() if ln.strip()], stdout=out,
                   growth_mb=rec.get("growth_kb", 0) / 1024, children_mb=rec.get("children_peak_kb", 0) / 1024,
                   marker=sb.marker.exists(),
                   victim_changed=hashlib.sha256(sb.victim.read_bytes()).hexdigest() != victim,
                   touched=touched, new_files=new, seconds=round(seconds, 2))
