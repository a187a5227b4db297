"""A loaded model, one class for every format: picks the format's backend by suffix/dir, reads the metadata, loads
the runner, and returns probabilities.

Three words, three things: a **backend** (``registry.Backend``, one class per format in ``backends/``) declares and
handles one format; a **runner** (``registry.Runner``, what ``Backend.load`` returns) runs one model in its runtime;
a **loaded model** (``LoadedModel`` here, the historical name ``AutoBackend`` kept) is a model ready to predict:
its backend, metadata, preprocessing and runner together.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolo_export import registry
from yolo_export.data.transforms import default_preprocess
from yolo_export.errors import ArgumentError, MetadataError, reading
from yolo_export.metadata import run_args


class LoadedModel:
    """``LoadedModel(path)(x)`` -> (N, nc) float32 probabilities for an NCHW float32 batch ``x``; ``path`` may also
    be a live torch module (run by the source format's backend).

    Attributes: ``format``, ``backend``, ``runner``, ``metadata``, ``names``, ``imgsz``, ``preprocess``,
    ``layout``, ``dynamic``, ``dynamic_imgsz``, ``fixed_batch``, ``threads``.
    """

    def __init__(self, model, device: str = "cpu", half: bool = False, backend=None, threads: int | None = None,
                 overrides: dict | None = None):
        from yolo_export.threads import resolve

        threads = resolve(threads)
        if not isinstance(model, (str, Path)):
            self.path = None
            self.backend = registry.source_backend()
            self.runner = self.backend.module_runner(model, device=device, half=half, threads=threads)
            imgsz = int(getattr(model, "imgsz", 224))
            self.metadata = {"names": dict(model.names), "imgsz": [imgsz, imgsz], "batch": 1,
                             "preprocess": getattr(model, "preprocess", None) or default_preprocess(imgsz),
                             "args": {"dynamic": True}}
        else:
            self.path = Path(model)
            self.backend = backend or registry.for_path(self.path)
            self.backend.require_runtime()
            self.metadata = with_overrides(read_metadata(self.backend, self.path), overrides, model)
            with reading(self.path, f"a {self.backend.title or self.backend.name} model"):
                self.runner = _load(self.backend, self.path, device, self.metadata, threads)
        self._overrides = overrides
        self._nc_checked = self.path is None
        self.format = self.backend.name
        self.threads = getattr(self.runner, "threads", None)   # what the runtime reports, for every timing
        self.names = {int(k): v for k, v in self.metadata["names"].items()}
        imgsz = self.metadata.get("imgsz") or [224, 224]
        self.imgsz = int(imgsz[0] if isinstance(imgsz, (list, tuple)) else imgsz)
        # an artefact without preprocess metadata takes its format's input layout (NHWC for the TensorFlow family)
        self.preprocess = self.metadata.get("preprocess") or {**default_preprocess(self.imgsz),
                                                               "layout": self.backend.layout}
        self.layout = self.preprocess.get("layout", self.backend.layout)
        args = run_args(self.metadata)
        self.dynamic = bool(args.get("dynamic")) or self.path is None
        self.dynamic_imgsz = bool(getattr(self.runner, "any_imgsz", False))
        self.fixed_batch = getattr(self.runner, "fixed_batch", None)
        if self.fixed_batch is None and not self.dynamic and self.path is not None:
            self.fixed_batch = int(self.metadata.get("batch") or 1)
        if self.fixed_batch:
            from yolo_export.limits import BATCH

            BATCH.check(int(self.fixed_batch), "the model's fixed batch", self.path)

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise ArgumentError(f"expected a 4-D NCHW batch, got shape {x.shape}")
        if not self.dynamic_imgsz and x.shape[-1] != self.imgsz:
            raise ArgumentError(f"this {self.format} model takes {self.imgsz}x{self.imgsz} inputs, got "
                                f"{x.shape[-2]}x{x.shape[-1]} (export again with --imgsz {x.shape[-1]})")
        if self.layout == "NHWC":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        out = self._run(x)
        if not self._nc_checked:
            self._check_nc(out.shape[1])
        return out

    def _run(self, x: np.ndarray) -> np.ndarray:
        fb = self.fixed_batch
        if not fb or len(x) == fb:
            return np.asarray(self.runner(x), dtype=np.float32).reshape(len(x), -1)
        outs = []
        for i in range(0, len(x), fb):
            chunk = x[i:i + fb]
            n = len(chunk)
            if n < fb:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fb - n, axis=0)])
            outs.append(np.asarray(self.runner(chunk), dtype=np.float32).reshape(fb, -1)[:n])
        return np.concatenate(outs)

    __call__ = run

    def _check_nc(self, nc: int) -> None:
        """The class names must name every output: a count that differs is the user's --names or a bad file."""
        self._nc_checked = True
        if nc != len(self.names):
            from yolo_export.errors import ArgumentError, MetadataError

            user = bool((self._overrides or {}).get("names") is not None)
            where = "--names / names=" if user else f"the metadata of {self.path}"
            raise (ArgumentError if user else MetadataError)(
                f"{where} gives {len(self.names)} class names but the model has {nc} outputs")

    def close(self):
        close = getattr(self.runner, "close", None)
        if close:
            close()


AutoBackend = LoadedModel   # the earlier name, kept for users' code


def read_metadata(backend, path) -> dict:
    """An artefact's metadata through its backend; damaged bytes are one MetadataError line, and a backend library
    it needs that is not installed (``yexport info model.onnx`` without the extra) the extra to install."""
    try:
        with reading(path, f"a {backend.title or backend.name} model's metadata", MetadataError):
            return backend.read_metadata(Path(path)) or {}
    except ModuleNotFoundError as e:
        root = (e.name or "").split(".")[0]
        if not root or root not in {m.split(".")[0] for m in backend.missing()}:
            raise
        from yolo_export.errors import MissingDependency

        raise MissingDependency(f"reading {backend.title or backend.name} metadata", backend.extra,
                                backend.missing_detail([root])) from None


def _load(backend, path, device, metadata, threads):
    """``backend.load`` with the thread count, for backends (plugins too) whose ``load`` takes it."""
    import inspect

    if "threads" in inspect.signature(backend.load).parameters:
        return backend.load(path, device, metadata, threads=threads)
    return backend.load(path, device, metadata)


def with_overrides(meta: dict, overrides: dict | None, path) -> dict:
    """An artefact's metadata with what the user supplied: ``names`` replace the carried ones, ``imgsz`` fills in
    a missing size. Without class names or an input size (from the file or the user) the artefact cannot be run."""
    meta = dict(meta)
    names = (overrides or {}).get("names")
    imgsz = (overrides or {}).get("imgsz")
    if names is not None:
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        items = names.items() if isinstance(names, dict) else enumerate(names)
        given = {int(k): str(v) for k, v in items}
        _check_names(given, meta.get("names"), path)
        meta["names"] = given
    if imgsz and not meta.get("imgsz"):
        meta["imgsz"] = [int(imgsz), int(imgsz)]
    if names is not None or imgsz:
        from yolo_export.metadata import check

        check(meta, path)  # the same budgets as for names and sizes read from a file
    missing = [k for k in ("names", "imgsz") if not meta.get(k)]
    if missing:
        from yolo_export.errors import MetadataError

        raise MetadataError(f"{path} carries no {' or '.join(missing)} in its metadata; supply them: "
                            f"YOLO(path, names=[...], imgsz=N) or --names a,b,c --imgsz N")
    return meta


def _check_names(given: dict, carried, path) -> None:
    """User-supplied class names: none empty, and as many as the artefact's own when it carries some."""
    from yolo_export.errors import ArgumentError

    if not given or any(not v.strip() for v in given.values()):
        raise ArgumentError("--names needs one non-empty name per class, comma-separated")
    if carried and len(carried) != len(given):
        raise ArgumentError(f"--names gives {len(given)} class names but {path} has {len(carried)} classes")
