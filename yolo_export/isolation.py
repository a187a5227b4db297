"""Run one piece of work in a child process with a timeout, so that a runtime that crashes, hangs or calls ``exit``
cannot take the caller down (e.g. a converter's ``sys.exit``, a native library's segfault, Paddle next to
TensorFlow). The one mechanism for this: the benchmark matrix runs each row through it, and so does ``yexport demo``
(which runs the matrix).

The target is a module-level function ``target(payload, report)``: ``report(message)`` sends a picklable message to
the caller on the way (e.g. "exported"), so that the caller knows how far a child got before it died. Children are
forked from a fork server that has imported the target's module (and torch) once, so a child starts in milliseconds
and never inherits the caller's thread pools. A child runs in its own process group: on timeout the whole group
(converters, Node runners it started) is killed. Its stdout goes to stderr, so a caller's ``--json`` output stays
one document.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Outcome:
    """What came back from the child: ``value`` (the target's return value) or ``error`` (one line), and the
    messages it reported before that."""

    value: Any = None
    error: str | None = None
    messages: list = field(default_factory=list)
    died: bool = False          # the child crashed, exited or timed out (``error`` says which)


def _one_line(e: BaseException) -> str:
    if isinstance(e, SystemExit):
        return f"called exit({e.code})"
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def _child_main(conn, call: bytes, sys_path: list) -> None:
    try:
        os.setpgrp()  # our own group: a timeout kills what we started too
    except OSError:
        pass
    sys.stdout.flush()
    os.dup2(2, 1)  # anything a library prints goes to stderr
    sys.stdout = sys.stderr
    try:
        sys.path[:] = sys_path  # the caller's, as it is now (a plugin folder added after the fork server started)
        target, payload = pickle.loads(call)
        value = target(payload, lambda msg: conn.send(("msg", msg)))
        conn.send(("done", value))
    except BaseException as e:  # noqa: BLE001 - whatever happens, the caller gets one line
        conn.send(("error", _one_line(e)))
    finally:
        conn.close()


_CONTEXTS: dict = {}


def _context(preload: tuple[str, ...]):
    """A fork server (started once, preloading ``preload``) where the platform has one, else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    if "ctx" not in _CONTEXTS:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(preload))
        _CONTEXTS["ctx"] = ctx
    return _CONTEXTS["ctx"]


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"crashed ({name})"
    return f"exited with code {code}" if code else "exited without a result"


def _reap(proc) -> None:
    """Make sure the child and everything in its process group are gone."""
    if proc.is_alive():
        proc.kill()
    proc.join(10)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers it started (the group outlives its leader)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def run_isolated(target, payload, timeout: float | None = None, preload: tuple[str, ...] = ("torch",)) -> Outcome:
    """Call ``target(payload, report)`` in a child process; never raises for what happens in the child."""
    try:
        call = pickle.dumps((target, payload))
    except Exception as e:  # noqa: BLE001 - e.g. a class defined inside a function
        return Outcome(error=f"cannot hand the work to a child process: {_one_line(e)}")
    ctx = _context(tuple(preload) + (target.__module__,))
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(send, call, list(sys.path)))
    proc.start()
    send.close()
    out = Outcome()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                out.error, out.died = f"timed out after {timeout:g} s", True
                break
            if not recv.poll(left):
                continue
            try:
                kind, body = recv.recv()
            except EOFError:
                proc.join(10)
                out.error, out.died = _death(proc.exitcode), True
                break
            if kind == "msg":
                out.messages.append(body)
                continue
            out.value, out.error = (body, None) if kind == "done" else (None, body)
            break
    finally:
        recv.close()
        _reap(proc)
    return out


def run_here(target, payload) -> Outcome:
    """The same call in this process (no isolation): the same ``Outcome`` for the same events, except a crash."""
    out = Outcome()
    try:
        out.value = target(payload, out.messages.append)
    except Exception as e:  # noqa: BLE001 - one line, as from a child
        out.error = _one_line(e)
    return out


# ------------------------------------------------------------------------------------------ trying a file in a child
_TRIED: set = set()


def _vm_size() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _capped(payload, report):
    """In the child: cap the address space at its size now plus the budget, then run the target."""
    import resource

    target, inner, extra = payload
    size = _vm_size()
    if size is not None:
        resource.setrlimit(resource.RLIMIT_AS, (size + extra, resource.getrlimit(resource.RLIMIT_AS)[1]))
    try:
        return target(inner, report)
    except MemoryError:
        from yolo_export.limits import RUNTIME_MEMORY

        raise RuntimeError(f"ran out of memory (over {extra:,} bytes; set {RUNTIME_MEMORY.env} to raise it)") from None


def try_in_child(target, payload, files, what: str, timeout: float = 300.0) -> None:
    """Call ``target(payload, report)`` (a runtime loading an artefact and running it once) in a child process before
    the caller lets that runtime read ``files`` in-process: for a runtime that trusts what it reads, so that damaged
    bytes that make it crash, hang or allocate without bound cost a child, not the caller. The child's address space
    is capped (``limits.RUNTIME_MEMORY``). Anything but success is one :class:`~yolo_export.errors.FileError` naming
    the first file. Once per process for the same files (path, size, modification time) and payload."""
    from pathlib import Path

    from yolo_export.errors import FileError
    from yolo_export.limits import RUNTIME_MEMORY

    stats = [(str(Path(f).resolve()), Path(f).stat().st_size, Path(f).stat().st_mtime_ns) for f in files]
    key = (f"{target.__module__}.{target.__qualname__}", repr(payload), tuple(stats))
    if key in _TRIED:
        return
    out = run_isolated(_capped, (target, payload, RUNTIME_MEMORY.limit), timeout, preload=())
    if out.error is not None:
        why = f"the runtime {out.error} reading it" if out.died else out.error
        raise FileError(f"cannot read {files[0]} as {what}: {why} (the file is damaged, or not that kind of model)")
    _TRIED.add(key)
