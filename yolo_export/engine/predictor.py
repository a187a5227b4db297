"""The predict loop shared by every format: sources -> preprocess (defined once) -> the loaded model -> Results."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from yolo_export.data.sources import iter_items
from yolo_export.data.transforms import preprocess as prep
from yolo_export.data.transforms import with_imgsz
from yolo_export.engine.results import Results
from yolo_export.errors import ArgumentError, ImageError
from yolo_export.utils import LOGGER


def resolve_preprocess(model, imgsz: int | None, fast: bool = False) -> dict:
    """The artefact's preprocessing (at ``imgsz``); ``fast``: opt in to the faster approximation (see
    :mod:`yolo_export.data.transforms`), which an artefact's own metadata may also ask for."""
    pp = dict(model.preprocess)
    if fast:
        pp["fast"] = True
    if imgsz and int(imgsz) != int(pp["crop"]):
        if model.path is not None and not model.dynamic_imgsz:
            raise ArgumentError(f"this {model.format} model was exported at imgsz {pp['crop']}; "
                                f"--imgsz {imgsz} needs a new export")
        pp = with_imgsz(pp, int(imgsz))
    return pp


def stream_predict(model, source, imgsz: int | None = None, batch: int = 1, verbose: bool = False,
                   workers: int | None = None, fast_preprocess: bool = False) -> Iterator[Results]:
    """Results for every image of ``source``, in order. ``workers`` threads decode and preprocess ahead of the
    runtime (default: one per core, at most 4; 0 = none). ``fast_preprocess``: the faster approximation (each
    Results says which preprocessing ran)."""

    pp = resolve_preprocess(model, imgsz, fast_preprocess)
    mode = "fast" if pp.get("fast") else "exact"
    if workers is None:
        from yolo_export.threads import available_cpus

        workers = min(4, available_cpus())
    batch = max(1, int(batch or 1))
    pending: list = []

    def flush():
        if not pending:
            return []
        t1 = time.perf_counter()
        x = np.stack([a for _, a, _, _ in pending])
        probs = model.run(x)
        t2 = time.perf_counter()
        infer = (t2 - t1) * 1e3 / len(pending)
        out = []
        for (path, _, pre_ms, shape), p in zip(pending, probs):
            t3 = time.perf_counter()
            r = Results(p, model.names, path=path, orig_shape=shape)
            r.preprocess = mode
            r.speed = {"preprocess": pre_ms, "inference": infer, "postprocess": (time.perf_counter() - t3) * 1e3}
            r.threads = model.threads
            if verbose:
                LOGGER.info(f"{path}: {r.verbose()}")
            out.append(r)
        pending.clear()
        return out

    read = skipped = 0
    for item, res in _prefetch(iter_items(source), lambda it: _load(it, pp), batch, workers):
        if isinstance(res, ImageError):
            if item.from_folder:
                LOGGER.warning(f"warning: skipped {res}")
                skipped += 1
                continue
            raise res
        read += 1
        arr, shape, pre_ms = res
        pending.append((str(item.path), arr, pre_ms, shape))
        if len(pending) >= batch:
            yield from flush()
    yield from flush()
    if skipped and not read:
        raise ImageError(f"none of the {skipped} image(s) in {_name(source)} could be read (see the warnings above)")


def _name(source) -> str:
    return str(source) if not isinstance(source, (list, tuple)) else ", ".join(str(s) for s in source[:3]) + (
        " ..." if len(source) > 3 else "")


def _load(item, pp):
    """Decode and preprocess one item (runs in a worker thread): (array, shape, ms) or the ImageError."""
    t0 = time.perf_counter()
    try:
        if item.ready:
            arr = np.asarray(item.obj, np.float32)
            shape = arr.shape[-2:]
        else:
            arr, shape = prep(item.obj, pp), None
    except ImageError as e:
        return e
    return arr, shape, (time.perf_counter() - t0) * 1e3


def _prefetch(items, fn, batch: int, workers: int):
    """Yield ``(item, fn(item))`` in order while worker threads prepare the next ones. Image decoding and
    resampling release the GIL, so preprocessing overlaps with the runtime call instead of adding to it.
    ``workers=0``: everything in the calling thread."""
    if workers <= 0:
        for it in items:
            yield it, fn(it)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    ahead = max(2 * batch, 2 * workers, 4)
    queue: deque = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="yexport-prep") as pool:
        for it in items:
            queue.append((it, pool.submit(fn, it)))
            if len(queue) >= ahead:
                first, fut = queue.popleft()
                yield first, fut.result()
        while queue:
            first, fut = queue.popleft()
            yield first, fut.result()
