"""The YOLO facade: one object for a YAML, a checkpoint, a zoo name or any exported artefact."""

from __future__ import annotations

from pathlib import Path

from yolo_export import options
from yolo_export.errors import ArgumentError, CheckpointError


class YOLO:
    """``YOLO("yolov8n-cls.yaml")``, ``YOLO("best.pt")``, ``YOLO("yolov8s-cls.pt")`` (zoo), ``YOLO("best.onnx")``.

    For an exported artefact, ``names`` replace the class names it carries and ``imgsz`` supplies its input size
    where the file does not say (artefacts of other tools without metadata); for a ``.pt``, ``names`` start
    transfer learning on a new class list.

    ``model(source)`` / ``model.predict(source, imgsz=, batch=, device=, stream=)`` return ``Results``;
    ``export``, ``train``, ``val`` and ``info`` work on the PyTorch model (train/val on artefacts too for val).

    ``format`` / ``format_backend``: the model's format (name / ``registry.Backend``); ``loaded_model()`` the model
    loaded in its runtime (``autobackend.LoadedModel``, cached; ``backend()`` is its earlier name).
    """

    def __init__(self, model: str | Path = "yolov8n-cls.yaml", scale: str | None = None, nc: int | None = None,
                 names=None, task: str = "classify", device: str | None = None, verbose: bool = False,
                 threads: int | None = None, imgsz: int | None = None):
        if task not in (None, "classify"):
            raise CheckpointError(f"task '{task}' is not supported (this tool handles classification models)")
        self.model = None           # torch module when the source is .yaml / .pt
        self.ckpt = None
        self.ckpt_path: str | None = None
        self.model_name: str | None = None
        self._format_backend = None  # the registry Backend of an artefact; None: the in-memory model's (source) format
        self.device = device or "cpu"
        self.threads = threads      # None: YOLO_EXPORT_THREADS, else the CPUs this process has (yolo_export.threads)
        self._loaded = None
        self._loaded_key = None
        self.metrics = None
        self.last_export = None
        self.zoo_name: str | None = None  # set when a zoo name resolved through the manifest
        src = str(model)
        p = Path(src)
        if p.suffix in (".yaml", ".yml"):
            from yolo_export.nn.model import ClassificationModel

            self.model = ClassificationModel(src, nc=nc, scale=scale, names=names).eval()
            self.model.imgsz = 224
            self.model.preprocess = None
            self.model_name = p.stem if not scale else p.stem.replace("yolov8-cls", f"yolov8{scale}-cls")
        elif p.suffix == ".pt" and not p.is_dir():
            if not p.exists():
                from yolo_export import zoo

                p = Path(zoo.resolve(src))
                self.zoo_name = p.stem
            self._load_pt(p)
            if names is not None:
                self.model.reset_classes(names)
        else:
            from yolo_export import registry

            self._format_backend = registry.for_path(p)
            self.ckpt_path = str(p)
            self.model_name = p.stem
            self._artefact_path = p
            self._overrides = {"names": names, "imgsz": imgsz}

    def _load_pt(self, p: Path):
        from yolo_export.nn.checkpoint import build_from_checkpoint, load_checkpoint

        self.ckpt = load_checkpoint(p)
        self.model = build_from_checkpoint(self.ckpt)
        self.ckpt_path = str(p)
        self.model_name = p.stem

    # ------------------------------------------------------------------------------ properties
    @property
    def format_backend(self):
        """The ``registry.Backend`` of this model's format (for a .yaml / .pt model: the source format's)."""
        if self.model is not None or self._format_backend is None:
            from yolo_export import registry

            return registry.source_backend()
        return self._format_backend

    @property
    def format(self) -> str:
        return self.format_backend.name

    @format.setter
    def format(self, value) -> None:   # it was a plain attribute once: say what to do instead
        raise AttributeError("YOLO.format follows the model; use YOLO.adopt(model, ...) to swap models")

    def adopt(self, model, ckpt: dict | None = None, path: str | Path | None = None) -> YOLO:
        """Hold ``model`` (a torch module, e.g. the best weights after training) from now on, with its checkpoint
        dict and file; any model loaded in a runtime before is forgotten."""
        self.model, self.ckpt = model, ckpt
        self.ckpt_path = str(path) if path is not None else None
        self.model_name = Path(path).stem if path is not None else self.model_name
        self._format_backend = None
        self._loaded = self._loaded_key = None
        return self

    @property
    def names(self) -> dict:
        if self.model is not None:
            return dict(self.model.names)
        return {int(k): v for k, v in (self.metadata.get("names") or {}).items()}

    @property
    def imgsz(self) -> int:
        if self.model is not None:
            return int(getattr(self.model, "imgsz", 224))
        sz = self.metadata.get("imgsz") or [224]
        return int(sz[0] if isinstance(sz, (list, tuple)) else sz)

    @property
    def preprocess(self) -> dict | None:
        if self.model is not None:
            return getattr(self.model, "preprocess", None)
        from yolo_export.data.transforms import default_preprocess

        return self.metadata.get("preprocess") or default_preprocess(self.imgsz)

    @property
    def metadata(self) -> dict:
        """The artefact's metadata, read without loading its runtime (so it works where the format can't run)."""
        if self._loaded is not None:
            return self._loaded.metadata
        if self.model is not None:
            return self.loaded_model().metadata
        if getattr(self, "_metadata", None) is None:
            from yolo_export.autobackend import read_metadata, with_overrides

            raw = read_metadata(self._format_backend, self._artefact_path)
            self._metadata = with_overrides(raw, self._overrides, self._artefact_path)
        return self._metadata

    def loaded_model(self, device: str | None = None, half: bool = False, threads: int | None = None):
        """This model loaded in its runtime (``autobackend.LoadedModel``), kept while device/half/threads stay."""
        from yolo_export.autobackend import LoadedModel

        device = device or self.device
        threads = threads or self.threads
        key = (device, half, threads)
        if self._loaded is None or self._loaded_key != key:
            if self.model is not None:
                self._loaded = LoadedModel(self.model, device=device, half=half, threads=threads)
            else:
                self._loaded = LoadedModel(self._artefact_path, device=device, threads=threads,
                                            backend=self._format_backend, overrides=self._overrides)
            self._loaded_key = key
        return self._loaded

    backend = loaded_model    # the earlier name, kept for users' code

    # ------------------------------------------------------------------------------ predict
    def predict(self, source, imgsz: int | None = None, batch: int = 1, device: str | None = None,
                stream: bool = False, half: bool = False, verbose: bool = False, fast_preprocess: bool = False,
                threads: int | None = None):
        from yolo_export.engine.predictor import stream_predict

        options.check(imgsz=imgsz, batch=batch, threads=threads)
        gen = stream_predict(self.loaded_model(device, half, threads), source, imgsz=imgsz, batch=batch,
                             verbose=verbose, fast_preprocess=fast_preprocess)
        return gen if stream else list(gen)

    __call__ = predict

    # ------------------------------------------------------------------------------ export / info
    def export(self, format: str = "onnx", **kwargs) -> str:
        from yolo_export.engine.exporter import export

        self.last_export = export(self, format, **kwargs)
        return self.last_export.path

    def fuse(self) -> YOLO:
        if self.model is not None:
            self.model.fuse()
        return self

    def save(self, path: str | Path) -> str:
        from yolo_export.nn.checkpoint import save_checkpoint

        if self.model is None:
            raise ArgumentError("only a PyTorch model can be saved as .pt")
        save_checkpoint(path, self.model, half=False, preprocess=self.preprocess)
        return str(path)

    def info(self) -> dict:
        out = {"format": self.format, "path": self.ckpt_path, "task": "classify", "names": self.names,
               "nc": len(self.names), "imgsz": self.imgsz}
        if self.model is not None:
            out.update({"arch": self.model.yaml.get("yaml_file"), "scale": self.model.scale,
                        "params": self.model.num_params(), "gflops": round(self.model.gflops(self.imgsz), 3),
                        "layers": len(list(self.model.modules())), "fused": self.model.is_fused(),
                        "module_attrs": self.model.attrs,
                        "preprocess": self.preprocess})
            if self.ckpt:
                out["checkpoint"] = {k: self.ckpt.get(k) for k in ("version", "date", "source", "metrics")
                                     if self.ckpt.get(k) is not None}
        else:
            missing = [k for k in ("names", "imgsz") if not self.metadata.get(k)]
            if missing:
                from yolo_export.errors import MetadataError

                raise MetadataError(f"{self.ckpt_path} carries no {' or '.join(missing)} in its metadata (was it "
                                    "exported by a YOLO tool?); it cannot be run or validated as it is")
            out.update(self._graph_stats())
            out["metadata"] = {k: v for k, v in self.metadata.items() if k != "names"}
        return out

    def _graph_stats(self) -> dict:
        """params / GFLOPs counted from an artefact's graph, or None with the reason (never an exception)."""
        from yolo_export.errors import user_error

        b = self._format_backend
        try:
            b.require_runtime()
            return b.graph_stats(self._artefact_path)
        except Exception as e:  # noqa: BLE001 - info still reports everything else
            return {"params": None, "gflops": None, "stats_reason": str(user_error(e)).splitlines()[0]}

    # ------------------------------------------------------------------------------ train / val
    def train(self, **kwargs):
        from yolo_export.engine.trainer import Trainer

        trainer = Trainer(self, **kwargs)
        self.metrics = trainer.train()
        self.trainer = trainer
        return self.metrics

    def val(self, **kwargs):
        from yolo_export.engine.validator import Validator

        options.check(**{k: kwargs.get(k) for k in ("imgsz", "batch", "threads")})
        self.metrics = Validator(self, **kwargs).run()
        return self.metrics

    def __repr__(self):
        return f"YOLO({self.ckpt_path or self.model_name!r}, format={self.format})"
