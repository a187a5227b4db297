"""Damaged artefacts: seeded mutants of a real exported artefact, each loaded and predicted by the real CLI in a
child process, and how each one ended.

A mutant is a copy of the artefact with one of its model files changed (``metadata.yaml`` is left alone, so that the
runtime itself meets the damage): bits flipped, the file cut short, a range overwritten, or a number that looks like a
length or an offset inflated (an aligned 32-bit value within the file's size in a binary file, a run of digits in a
text file). Positions favour the head and the tail of a file, where the structure of every format here lives, and
leave the first 8 bytes alone (a magic number or a FlatBuffer identifier), so that the mutants get past the cheap
checks and into the reader.

Each mutant runs as ``python -m yolo_export predict -m MUTANT -s IMAGE --json`` in a child forked from a warm worker
(``child.py``: the runtime imported once, the address space capped), or in a fresh process (``fresh=True``). The
outcome is one of :data:`KINDS`; :data:`FATAL` are the ones that take the process down.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CHILD = HERE / "child.py"
HEAD = 64 * 1024              # where a format's structure usually is: its first and last 64 KiB
KEEP = 8                      # bytes never touched: the magic number / FlatBuffer identifier
MUTATIONS = ("flip", "truncate", "overwrite", "inflate")

# how a mutant ended, best first; the last four take the process down
KINDS = ("same", "answer", "clean", "wrong", "internal", "traceback", "exit", "memory", "hang", "signal")
FATAL = ("exit", "memory", "hang", "signal")
DOC = {"same": "predicts what the intact artefact predicts", "answer": "an answer (not compared: no reference run)",
       "clean": "one line of a project error",
       "wrong": "a different answer, no error", "internal": "a non-project exception (InternalError at the CLI)",
       "traceback": "a traceback or an uncaught exception", "exit": "exited without a project error",
       "memory": "ran out of memory", "hang": "hung past the timeout (killed)",
       "signal": "killed by a signal (abort, segfault...)"}


# ------------------------------------------------------------------------------------------ mutations
def _position(rng, n: int) -> int:
    """A byte offset in ``[KEEP, n)``: the first or last 64 KiB more often than the middle."""
    lo = KEEP if n > 4 * KEEP else 0
    r = rng.random()
    if r < 0.4:
        return int(rng.integers(lo, max(lo + 1, min(n, HEAD))))
    if r < 0.6:
        return int(rng.integers(max(lo, n - HEAD), n))
    return int(rng.integers(lo, n))


def _is_text(data: bytes) -> bool:
    head = data[:4096]
    return b"\0" not in head and sum(32 <= c < 127 or c in (9, 10, 13) for c in head) >= 0.95 * max(1, len(head))


BIG = (0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFF0, 0x10000000)
BIG_TEXT = ("2147483647", "4294967295", "99999999999", "-1", "0", "65536")


def _inflate(data: bytearray, rng) -> str:
    n = len(data)
    if _is_text(bytes(data)):
        runs = [m.span() for m in re.finditer(rb"\d+", data)]
        if not runs:
            return _overwrite(data, rng)
        a, b = runs[int(rng.integers(len(runs)))]
        new = BIG_TEXT[int(rng.integers(len(BIG_TEXT)))]
        data[a:b] = new.encode()
        return f"inflate text number at {a} -> {new}"
    words = np.frombuffer(bytes(data[:n - n % 4]), dtype="<u4")
    cand = np.nonzero((words > 0) & (words <= n))[0]
    cand = cand[cand * 4 >= KEEP]
    if not len(cand):
        return _overwrite(data, rng)
    head = cand[(cand * 4 < HEAD) | (cand * 4 >= n - HEAD)]
    pool = head if len(head) and rng.random() < 0.6 else cand
    i = int(pool[int(rng.integers(len(pool)))])
    old, new = int(words[i]), int(BIG[int(rng.integers(len(BIG)))])
    data[4 * i:4 * i + 4] = new.to_bytes(4, "little")
    return f"inflate u32 at {4 * i}: {old} -> {new:#x}"


def _overwrite(data: bytearray, rng) -> str:
    at = _position(rng, len(data))
    size = int(rng.choice([1, 2, 4, 8, 16, 64, 256]))
    fill = ["random", "ff", "00"][int(rng.integers(3))]
    chunk = rng.bytes(size) if fill == "random" else bytes([0xFF if fill == "ff" else 0]) * size
    data[at:at + size] = chunk[:max(0, len(data) - at)]
    return f"overwrite {size} bytes at {at} ({fill})"


def _flip(data: bytearray, rng) -> str:
    k = int(rng.integers(1, 9))
    spots = sorted(_position(rng, len(data)) for _ in range(k))
    for at in spots:
        data[at] ^= 1 << int(rng.integers(8))
    return f"flip {k} bit(s) at {spots[:4]}{'...' if k > 4 else ''}"


def _truncate(data: bytearray, rng) -> str:
    at = _position(rng, len(data))
    del data[at:]
    return f"truncate to {at} bytes"


def mutate(data: bytes, how: str, rng) -> tuple[bytes, str]:
    """``data`` changed by one mutation of kind ``how``, and a description of the change."""
    buf = bytearray(data)
    if not buf:
        return data, "empty file left as it is"
    what = {"flip": _flip, "truncate": _truncate, "overwrite": _overwrite, "inflate": _inflate}[how](buf, rng)
    return bytes(buf), what


NOT_MODEL = (".yaml", ".html", ".js", ".wasm", ".css")   # metadata, and the TF.js demo page beside the model


def model_files(artefact: Path) -> list[Path]:
    """The files of an artefact the runtime reads (a folder's ``metadata.yaml`` and demo page left out)."""
    if artefact.is_file():
        return [artefact]
    return sorted(p for p in artefact.rglob("*") if p.is_file() and p.suffix not in NOT_MODEL)


def make_mutant(artefact: Path, dest: Path, seed: int) -> tuple[Path, str]:
    """A copy of ``artefact`` under ``dest`` (same name) with one file mutated; (its path, what was done)."""
    rng = np.random.default_rng(seed)
    out = dest / artefact.name
    (shutil.copytree if artefact.is_dir() else shutil.copy)(artefact, out)
    files = model_files(out)
    big = max(files, key=lambda p: p.stat().st_size)
    rest = [p for p in files if p != big]
    f = rest[int(rng.integers(len(rest)))] if rest and rng.random() < 0.6 else big
    how = MUTATIONS[seed % len(MUTATIONS)]
    data, what = mutate(f.read_bytes(), how, rng)
    f.write_bytes(data)
    return out, f"{f.relative_to(dest)}: {what}"


# ------------------------------------------------------------------------------------------ running
def child_env(tmp: Path) -> dict:
    """The user's environment (their cache: TF.js runs with the npm packages there) without plugins or budgets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_EXPORT_") or k == "YOLO_EXPORT_CACHE"}
    env.update({"YOLO_EXPORT_NO_PLUGINS": "1", "PYTHONWARNINGS": "ignore",
                "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"})
    return env


def _answer(proc) -> dict | None:
    """The worker's next protocol line (other lines are what a runtime printed), or None if it died."""
    from .child import TAG

    for line in proc.stdout:
        if line.startswith(TAG):
            return json.loads(line[len(TAG):])
    return None


class Worker:
    """A warm ``child.py`` for one format (``fork=True``), or a fresh process per job (``fork=False``)."""

    def __init__(self, imports: str, tmp: Path, fork: bool = True):
        self.imports, self.tmp, self.fork, self.proc = imports, tmp, fork, None
        self.log = open(tmp / "worker.log", "a")   # the worker's own stderr (its imports' warnings)

    def _start(self, *extra: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, str(CHILD), self.imports, *extra], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=self.log, text=True, env=child_env(self.tmp),
                             cwd=self.tmp)
        return p

    def _ask(self, job: dict) -> dict | None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
            if not _answer(self.proc):
                raise RuntimeError(f"the worker for {self.imports} did not start")
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return _answer(self.proc)

    def _fresh(self, job: dict) -> dict:
        from .child import wait_child

        p = self._start("--no-fork")
        p.stdin.write(json.dumps(job) + "\n")
        p.stdin.flush()
        ready = _answer(p)
        base = ready["base_kb"] if ready else 0
        rec = wait_child(p.pid, job["timeout"])
        p.returncode = rec["exit"]
        p.stdin.close()
        p.stdout.close()
        return {**rec, "growth_kb": max(0, rec["maxrss_kb"] - base)}

    def run(self, args: list[str], timeout: float, tag: str, warm: bool = False) -> tuple[dict, str, str]:
        """``warm``: the worker then imports what this job imported (for the intact artefact's run)."""
        job = {"args": args, "stdout": str(self.tmp / f"{tag}.out"), "stderr": str(self.tmp / f"{tag}.err"),
               "timeout": timeout, "modules": str(self.tmp / f"{tag}.modules") if warm and self.fork else ""}
        rec = (self._ask(job) if self.fork else self._fresh(job)) or {"exit": "worker died", "hung": False,
                                                                      "growth_kb": 0, "seconds": 0}
        return rec, _text(job["stdout"]), _text(job["stderr"])

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()


def _text(name: str) -> str:
    return Path(name).read_text(errors="replace") if Path(name).exists() else ""


@dataclass
class Outcome:
    kind: str
    detail: str
    mutation: str
    exit: int | str
    seconds: float
    growth_mb: float


def _answers(stdout: str):
    try:
        doc = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return doc


def _same_answer(got, ref) -> bool:
    if not isinstance(got, list) or len(got) != len(ref):
        return False
    for g, r in zip(got, ref):
        if g.get("top1") != r.get("top1"):
            return False
        gc = [d.get("confidence") for d in g.get("top5", [])]
        rc = [d.get("confidence") for d in r.get("top5", [])]
        if len(gc) != len(rc) or not np.allclose(np.asarray(gc, float), np.asarray(rc, float), atol=1e-3):
            return False
    return True


def classify(rec: dict, stdout: str, stderr: str, ref) -> tuple[str, str]:
    """(one of KINDS, a short detail) for a child's record, output and the intact artefact's answers ``ref``."""
    code, err = rec["exit"], stderr.strip().splitlines()
    last = err[-1][:200] if err else ""
    if rec.get("hung"):
        return "hang", f"killed after {rec['seconds']:.0f}s; {last}"
    if re.search(r"bad_alloc|out of memory|MemoryError|Cannot allocate memory", stderr) and code != 0:
        return "memory", last
    if not isinstance(code, int) or code < 0:
        name = signal.Signals(-code).name if isinstance(code, int) else code
        return "signal", f"{name}; {last}"
    doc = _answers(stdout)
    if code == 0:
        if ref is None:
            return "answer", ""
        return ("same", "") if _same_answer(doc, ref) else ("wrong", json.dumps(doc)[:200])
    if "Traceback" in stderr or code == 70:
        return "traceback", last
    if not isinstance(doc, dict) or "type" not in doc:
        return "exit", f"exit {code}; {last}"
    ours = [ln for ln in err if ln.startswith("error: ")]
    if doc["type"] == "InternalError":
        return "internal", doc["error"][:200]
    if ours != [f"error: {doc['error']}"]:
        return "traceback", f"{len(ours)} error lines; {last}"
    return "clean", f"{doc['type']}: {doc['error'][:160]}"


def predict_args(backend, path: Path, image: Path) -> list[str]:
    """``predict --json``; for an export, with the class names and input size given (the tiny test model's), so
    that a mutant whose metadata is lost (a file cut short) still reaches the runtime."""
    args = ["predict", "-m", str(path), "-s", str(image), "--json"]
    if backend.is_source:
        return args
    return [*args, "--names", ",".join(f"c{i}" for i in range(10)), "--imgsz", "32"]


def make_image(path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def imports_for(backend) -> str:
    """What a warm worker imports for a format: its backend module and its runtime (the first requirement)."""
    return ",".join([type(backend).__module__, *backend.requires[:1]])


def run_format(backend, artefact: Path, seeds, tmp: Path, fork: bool = True, timeout: float = 60.0,
               on_outcome=None, reference: bool = True) -> list[Outcome]:
    """Every mutant of ``artefact`` (one per seed) through the CLI in a child. ``reference``: the intact artefact
    first, for the answer a mutant is compared with (a RuntimeError if it does not predict); the worker then
    imports what it imported, so that the mutants' children start warm. Without it (a test of a few mutants, where
    the warm-up would cost more than it saves) an answer is ``answer``, not compared."""
    tmp.mkdir(parents=True, exist_ok=True)
    image = make_image(tmp / "image.jpg")
    w = Worker(imports_for(backend), tmp, fork=fork)
    try:
        ref = _reference(w, backend, artefact, image, timeout) if reference else None
        return [_one_mutant(w, backend, artefact, image, seed, tmp, timeout, ref, on_outcome) for seed in seeds]
    finally:
        w.close()


def _reference(w: Worker, backend, artefact: Path, image: Path, timeout: float):
    rec, out, err = w.run(predict_args(backend, artefact, image), timeout * 5, "intact", warm=True)
    ref = _answers(out)
    if rec["exit"] != 0 or not isinstance(ref, list):
        raise RuntimeError(f"the intact {backend.name} artefact does not predict: {rec} {err[-500:]}")
    return ref


def _one_mutant(w: Worker, backend, artefact: Path, image: Path, seed: int, tmp: Path, timeout: float, ref,
                on_outcome) -> Outcome:
    where = tmp / f"m{seed}"
    where.mkdir()
    path, what = make_mutant(artefact, where, seed)
    rec, out, err = w.run(predict_args(backend, path, image), timeout, f"m{seed}")
    kind, detail = classify(rec, out, err, ref)
    o = Outcome(kind, detail, f"seed {seed}: {what}", rec["exit"], rec["seconds"],
                round(rec.get("growth_kb", 0) / 1024, 1))
    if on_outcome:
        on_outcome(o)
    shutil.rmtree(where, ignore_errors=True)
    return o


def tally(outcomes: list[Outcome]) -> dict[str, int]:
    return {k: sum(o.kind == k for o in outcomes) for k in KINDS}


def as_dict(o: Outcome) -> dict:
    return asdict(o)
