"""Predict sources: a file, a directory, a glob, a list of paths, PIL images, numpy arrays or torch tensors."""

from __future__ import annotations

import glob as _glob
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from yolo_export.data.transforms import IMG_SUFFIXES
from yolo_export.errors import ImageError, ImageNotFound


class Item:
    """One input: ``path`` (or a pseudo-name), the object to preprocess, and whether it came from a folder."""

    __slots__ = ("from_folder", "obj", "path", "ready")

    def __init__(self, path, obj, from_folder=False, ready=False):
        self.path, self.obj, self.from_folder, self.ready = path, obj, from_folder, ready


def iter_items(source) -> Iterator[Item]:
    if source is None:
        raise ImageError("no source given")
    if isinstance(source, (list, tuple)):
        for i, s in enumerate(source):
            if isinstance(s, (str, Path)):
                yield from iter_items(s)
            else:
                yield from _in_memory(s, f"image{i}")
        return
    if isinstance(source, (str, Path)):
        s = str(source)
        p = Path(s)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not _hidden(f.relative_to(p), ()))
            images = [f for f in files if f.suffix.lower() in IMG_SUFFIXES]
            if not images:
                raise ImageError(f"no images in directory {s} (looked for {', '.join(sorted(IMG_SUFFIXES))})")
            for f in images:
                yield Item(str(f), f, from_folder=True)
            return
        if any(c in s for c in "*?["):
            images = [f for f in safe_glob(s) if Path(f).suffix.lower() in IMG_SUFFIXES]
            if not images:
                raise ImageError(f"no images match {s}")
            for f in images:
                yield Item(f, Path(f), from_folder=True)
            return
        if s.startswith(("http://", "https://")):
            raise ImageError(f"URL sources are not supported; download the image first: {s}")
        if not p.exists():
            raise ImageNotFound(f"image not found: {s}")
        yield Item(s, p)
        return
    yield from _in_memory(source, "image0")


def safe_glob(pattern: str, limit: int = 1_000_000) -> list[str]:
    """Files matching ``pattern`` (``**`` = any depth), sorted, never through a symlinked folder: ``**`` walks the
    real tree only (no loops), and a match reached through a symlinked folder below the pattern's fixed root (such
    as ``up -> ..``) is dropped, so nothing outside the root or twice is read. Symlinked files are kept."""
    parts = Path(pattern).parts
    fixed = 0
    while fixed < len(parts) - 1 and not _glob.has_magic(parts[fixed]):
        fixed += 1
    root = Path(*parts[:fixed]) if fixed else Path(".")
    if not root.is_dir():
        return []
    out, wild = [], parts[fixed:]
    for p in root.glob(str(Path(*wild))):  # pathlib's ``**`` does not descend into symlinked folders
        if not p.is_file() or _through_symlink(p, root) or _hidden(p.relative_to(root), wild):
            continue
        out.append(str(p) if not str(pattern).startswith("./") else "./" + str(p))
        if len(out) > limit:
            raise ImageError(f"{pattern} matches more than {limit} files; narrow the pattern")
    return sorted(out)


def _hidden(rel: Path, pattern_parts) -> bool:
    """Whether ``rel`` goes through a dot-name that no dot-part of the pattern names: as the shell and ``glob.glob``,
    ``*`` / ``**`` / a folder listing skip ``.hidden`` files and folders (``._x.jpg``, ``.ipynb_checkpoints/``)."""
    import fnmatch

    dotted = [q for q in pattern_parts if q.startswith(".")]
    return any(c.startswith(".") and not any(fnmatch.fnmatchcase(c, q) for q in dotted) for c in rel.parts)


def _through_symlink(p: Path, root: Path) -> bool:
    """Whether a folder between ``root`` and ``p`` is a symlink."""
    d, depth = p.parent, len(p.parts) - len(root.parts) - 1
    for _ in range(max(depth, 0)):
        if d.is_symlink():
            return True
        d = d.parent
    return False


def _in_memory(obj, name) -> Iterator[Item]:
    if hasattr(obj, "detach"):  # torch tensor
        t = obj.detach().cpu()
        if t.ndim == 4:  # a ready NCHW float batch (already preprocessed), as other YOLO tools take it
            arr = t.float().numpy()
            for i in range(arr.shape[0]):
                yield Item(f"{name}_{i}", arr[i], ready=True)
            return
        yield Item(name, t.numpy() if t.ndim == 2 or t.shape[0] not in (1, 3) else t.numpy().transpose(1, 2, 0))
        return
    if isinstance(obj, np.ndarray) and obj.ndim == 4:
        for i in range(obj.shape[0]):
            yield Item(f"{name}_{i}", obj[i])
        return
    yield Item(name, obj)
