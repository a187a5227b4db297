"""Small helpers shared across the package (no heavy imports here)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

LOGGER = logging.getLogger("yolo_export")
if not LOGGER.handlers:
    _h = logging.StreamHandler(sys.stderr)
    _h.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.addHandler(_h)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


def set_verbosity(verbose: bool | None) -> None:
    """``True``: debug; ``False``: warnings only; ``None``: info."""
    LOGGER.setLevel(logging.DEBUG if verbose else logging.WARNING if verbose is False else logging.INFO)


def file_size_mb(path: str | Path) -> float:
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e6
    return p.stat().st_size / 1e6


def cache_dir() -> Path:
    """The user cache dir: $YOLO_EXPORT_CACHE, else $XDG_CACHE_HOME/yolo-export, else ~/.cache/yolo-export."""
    env = os.environ.get("YOLO_EXPORT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "yolo-export"


def remove(path: str | Path) -> None:
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def tmp_prefix(name: str) -> str:
    """The prefix of every temporary file or folder this tool writes beside ``name``: ``.NAME.tmp-PID-``.

    The process id lets a later run tell a leftover of a killed process (``clean_stale``) from one in use."""
    return f".{name}.tmp-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(near: str | Path) -> list[Path]:
    """Remove ``.NAME.tmp-PID-*`` leftovers beside ``near`` whose process is gone (a SIGKILLed or crashed run).

    Only names this tool writes are touched; a leftover of a live process (another export running) is kept."""
    near = Path(near)
    removed = []
    if not near.parent.is_dir():
        return removed
    head = f".{near.name}.tmp-"
    for p in near.parent.iterdir():
        if not p.name.startswith(head):
            continue
        pid = p.name[len(head):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            remove(p)
            removed.append(p)
    return removed


def replace_path(src: str | Path, dst: str | Path) -> Path:
    """Move a finished file or directory into place, replacing what was there (the caller decided it may).

    Files move with one atomic ``os.replace``; a directory that already exists is moved aside first (under a
    temporary name), so that at no time is a half-written artefact visible under the final name.
    """
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir() and dst.exists():
        old = dst.with_name(tmp_prefix(dst.name) + "old")
        remove(old)
        os.replace(dst, old)
        os.replace(src, dst)
        remove(old)
    else:
        os.replace(src, dst)
    return dst


@contextlib.contextmanager
def staging_dir(near: str | Path):
    """A temporary directory beside ``near`` (same filesystem, so the final rename is atomic), removed on exit.

    Stale staging folders of killed runs for the same name are removed first."""
    parent = Path(near).parent
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale(near)
    d = Path(tempfile.mkdtemp(prefix=tmp_prefix(Path(near).name), dir=parent))
    try:
        yield d
    finally:
        remove(d)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename: a reader sees the old or the new
    file, never a part; a failure (disk full) leaves the old file and no temporary file."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write(path: str | Path, fill) -> Path:
    """:func:`atomic_write_bytes` where ``fill(f)`` writes the content into the open binary file ``f`` (to stream
    a large file, e.g. one copied from another, without holding it in memory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(path.name), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written artefact gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def nearest(word: str, choices) -> str | None:
    import difflib

    m = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.4)
    return m[0] if m else None


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM ends the work as Ctrl-C does (a KeyboardInterrupt), so staging folders are removed on the way out and
    the CLI says 'interrupted' (exit 130). Only the main thread can set a handler; elsewhere nothing changes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
