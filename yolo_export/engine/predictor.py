"""The predict loop shared by every format: sources -> preprocess (defined once) -> backend -> Results."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from yolo_export.data.sources import iter_items
from yolo_export.data.transforms import preprocess as prep
from yolo_export.data.transforms import with_imgsz
from yolo_export.engine.results import Results
from yolo_export.errors import ImageError, YoloExportError
from yolo_export.utils import LOGGER


def resolve_preprocess(backend, imgsz: int | None) -> dict:
    pp = dict(backend.preprocess)
    if imgsz and int(imgsz) != int(pp["crop"]):
        if backend.path is not None and not backend.dynamic_imgsz:
            raise YoloExportError(f"this {backend.format} model was exported at imgsz {pp['crop']}; "
                                  f"--imgsz {imgsz} needs a new export")
        pp = with_imgsz(pp, int(imgsz))
    return pp


def stream_predict(backend, source, imgsz: int | None = None, batch: int = 1, verbose: bool = False
                   ) -> Iterator[Results]:
    pp = resolve_preprocess(backend, imgsz)
    batch = max(1, int(batch or 1))
    pending: list = []

    def flush():
        if not pending:
            return []
        t1 = time.perf_counter()
        x = np.stack([a for _, a, _, _ in pending])
        probs = backend.run(x)
        t2 = time.perf_counter()
        infer = (t2 - t1) * 1e3 / len(pending)
        out = []
        for (path, _, pre_ms, shape), p in zip(pending, probs):
            t3 = time.perf_counter()
            r = Results(p, backend.names, path=path, orig_shape=shape)
            r.speed = {"preprocess": pre_ms, "inference": infer, "postprocess": (time.perf_counter() - t3) * 1e3}
            if verbose:
                LOGGER.info(f"{path}: {r.verbose()}")
            out.append(r)
        pending.clear()
        return out

    for item in iter_items(source):
        t0 = time.perf_counter()
        try:
            if item.ready:
                arr = np.asarray(item.obj, np.float32)
                shape = arr.shape[-2:]
            else:
                arr = prep(item.obj, pp)
                shape = None
        except ImageError as e:
            if item.from_folder:
                LOGGER.warning(f"warning: skipped {e}")
                continue
            raise
        pending.append((str(item.path), arr, (time.perf_counter() - t0) * 1e3, shape))
        if len(pending) >= batch:
            yield from flush()
    yield from flush()
