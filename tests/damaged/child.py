"""A warm worker that runs ``python -m yolo_export ARGS`` once per job, each in a forked child, and reports how the
child ended: its exit status (a negative number for a signal), whether it hung past the job's timeout (then it is
killed), its peak memory growth and its seconds.

    python tests/damaged/child.py MOD1,MOD2            # jobs as JSON lines on stdin, one JSON answer line each
    python tests/damaged/child.py MOD1,MOD2 --no-fork  # one job, run in this process (a fresh process per job)

A job: ``{"args": [...], "stdout": FILE, "stderr": FILE, "timeout": SECONDS}``. The modules are imported before the
first fork (what the command imports anyway: torch, the format's runtime), so a child starts warm; its address space
is capped at the size after those imports plus ``DAMAGED_AS_HEADROOM`` bytes (default 1 GiB), so a runaway
allocation fails inside the child instead of taking the machine.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import runpy
import signal
import sys
import time


TAG = "@@damaged "   # marks the protocol's lines on stdout (a runtime may print there while it is imported)


def say(rec: dict) -> None:
    print(TAG + json.dumps(rec), flush=True)


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def wait_child(pid: int, timeout: float) -> dict:
    """Wait for ``pid`` (killing it after ``timeout`` seconds): exit status, hang flag, peak RSS (kB), seconds."""
    t0 = time.monotonic()
    hung = False
    while True:
        done, status, ru = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            _, status, ru = os.wait4(pid, 0)
            hung = True
            break
        time.sleep(0.005)
    return {"exit": os.waitstatus_to_exitcode(status), "hung": hung, "maxrss_kb": ru.ru_maxrss,
            "seconds": round(time.monotonic() - t0, 3)}


def run_job(job: dict, cap: int) -> int:
    """Run the CLI on the job's arguments in this process, its output in the job's files; the exit code."""
    for fd, name in ((1, job["stdout"]), (2, job["stderr"])):
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, fd)
        os.close(out)
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    sys.argv = ["yolo_export", *job["args"]]
    code = 0
    try:
        runpy.run_module("yolo_export", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 - recorded; the harness classifies it
        sys.stderr.write(f"uncaught {type(e).__name__}: {e}\n")
        code = 70
    if job.get("modules"):
        with open(job["modules"], "w") as f:
            json.dump(list(sys.modules), f)
    return code


def warm_up(modules_file: str) -> None:
    """Import, in their order, the modules a job imported (the runtime's own lazy imports too): later children start
    warm. Nothing is run, so no runtime thread exists before the next fork."""
    try:
        with open(modules_file) as f:
            names = json.load(f)
    except (OSError, ValueError):
        return
    for name in names:
        if name not in sys.modules and name != "__main__":
            try:
                importlib.import_module(name)
            except BaseException:  # noqa: BLE001 - a private module that only imports in its own order
                pass


def _fork_job(job: dict, cap: int, base_kb: int) -> dict:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 71
        try:
            code = run_job(job, cap)
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    rec = wait_child(pid, float(job.get("timeout", 60)))
    if job.get("modules"):
        warm_up(job["modules"])
    return {**rec, "growth_kb": max(0, rec["maxrss_kb"] - base_kb)}


def main() -> int:
    mods = sys.argv[1] if len(sys.argv) > 1 else ""
    for m in filter(None, mods.split(",")):
        importlib.import_module(m)
    importlib.import_module("yolo_export.cli")
    cap = _vm_size() + int(os.environ.get("DAMAGED_AS_HEADROOM", 1 << 30))
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if "--no-fork" in sys.argv:
        job = json.loads(sys.stdin.readline())
        say({"ready": True, "base_kb": base_kb})
        code = run_job(job, cap)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    say({"ready": True, "base_kb": base_kb})
    for line in sys.stdin:
        if line.strip():
            say(_fork_job(json.loads(line), cap, base_kb))
    return 0


if __name__ == "__main__":
    sys.exit(main())
