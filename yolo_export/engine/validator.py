"""Validation: top-1, top-5, per-class accuracy, confusion matrix and speed, for a ``.pt`` or any exported artefact.

Images go through :func:`yolo_export.data.transforms.preprocess` with the model's own ``preprocess`` (the predict
path), then through ``yolo.loaded_model()`` (``LoadedModel``), so an export is judged exactly as it will be used.
The same counting code (:func:`evaluate`) runs inside training, where counts are summed across DDP ranks.
"""

from __future__ import annotations

import os
import time

import numpy as np

from yolo_export.errors import DatasetError, YoloExportError
from yolo_export.utils import LOGGER

AF_UNIX_PATH_MAX = 108  # bytes in a Unix socket path, with its terminating NUL (Linux)


class Metrics(dict):
    """A dict of metrics that also reads as attributes: ``m.top1``, ``m["top5"]``, ``m.confusion_matrix``."""

    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError:
            raise AttributeError(k) from None


def evaluate(predict, loader, nc: int, dist=None, progress: bool = False, desc: str = "val",
             keep_preds: bool = False) -> dict:
    """Run ``predict(x: torch.Tensor) -> probs (N, nc)`` over ``loader`` and count.

    Returns the confusion matrix (rows: true class, columns: predicted), top-5 hits, the summed NLL of the
    true class, image count, skipped (undecodable) images and timings. ``dist``: a torch.distributed module
    whose counts are summed across ranks (all ranks must call this).
    """
    import torch
    from tqdm import tqdm

    from yolo_export.data.datasets import Batches

    k = min(5, nc)
    cm = torch.zeros(nc, nc, dtype=torch.int64)
    top5 = torch.zeros((), dtype=torch.int64)
    nll = torch.zeros((), dtype=torch.float64)
    t_inf = t_post = 0.0
    preds: list[tuple[int, list[int]]] = []  # (dataset index, top-k classes) with keep_preds
    batches = Batches(loader)
    bar = tqdm(total=len(loader), desc=desc, leave=False, disable=not progress, mininterval=0.5, dynamic_ncols=True)
    for x, y, idx in batches:
        t1 = time.perf_counter()
        bar.update(1)
        if x is None:
            continue
        p = predict(x)
        p = p if isinstance(p, torch.Tensor) else torch.from_numpy(np.asarray(p))
        p = p.detach().float().cpu()
        t2 = time.perf_counter()
        t_inf += t2 - t1
        topk = p.topk(k, 1).indices
        pred = topk[:, 0]
        cm += torch.bincount(y * nc + pred, minlength=nc * nc).reshape(nc, nc)
        top5 += (topk == y[:, None]).any(1).sum()
        nll += -torch.log(p.gather(1, y[:, None]).clamp_min(1e-12)).double().sum()
        if keep_preds:
            preds.extend(zip(idx.tolist(), topk.tolist()))
        t_post += time.perf_counter() - t2
    bar.close()
    for f, _ in batches.bad[:5]:
        LOGGER.warning(f"warning: skipped an image that cannot be decoded: {f}")
    skipped = torch.tensor(batches.skipped, dtype=torch.int64)
    t_data = batches.wait
    n_local = int(cm.sum())
    if dist is not None:
        for t in (cm, top5, nll, skipped):
            dist.all_reduce(t)
    return {"cm": cm.numpy(), "top5": int(top5), "nll": float(nll), "skipped": int(skipped),
            "n": int(cm.sum()), "n_local": n_local, "time": (t_data, t_inf, t_post), "preds": preds,
            "bad": [f for f, _ in batches.bad]}


def summarise(counts: dict, names: list[str]) -> Metrics:
    cm = counts["cm"]
    n = max(int(cm.sum()), 1)
    rows = cm.sum(1)
    per_class = {names[i]: (float(cm[i, i] / rows[i]) if rows[i] else None) for i in range(len(names))}
    nl = max(counts.get("n_local", n), 1)
    t_data, t_inf, t_post = counts["time"]
    m = Metrics(
        top1=float(np.trace(cm) / n),
        top5=float(counts["top5"] / n),
        loss=float(counts["nll"] / n),
        n=int(cm.sum()),
        skipped=int(counts["skipped"]),
        per_class=per_class,
        confusion_matrix=cm.astype(int).tolist(),
        names=list(names),
        speed={"preprocess": 1e3 * t_data / nl, "inference": 1e3 * t_inf / nl, "postprocess": 1e3 * t_post / nl},
    )
    m["fitness"] = m["top1"]
    return m


def match_classes(model_names: dict, data_names: list[str]) -> list[int] | None:
    """Map dataset class index -> model class index, or None when they are the same list."""
    mnames = [model_names[i] for i in sorted(model_names)]
    if mnames == list(data_names):
        return None
    if set(mnames) == set(data_names):
        return [mnames.index(c) for c in data_names]
    if len(mnames) == len(data_names):
        LOGGER.warning(f"warning: the model's class names ({', '.join(mnames[:4])}, ...) differ from the dataset's "
                       f"({', '.join(data_names[:4])}, ...); matching them by index")
        return None
    raise DatasetError(f"the model has {len(mnames)} classes but the dataset has {len(data_names)} "
                       f"({', '.join(data_names[:5])}{', ...' if len(data_names) > 5 else ''}); they must match")


def make_loader(ds, batch: int, workers: int, sampler=None, pin: bool = False):
    from torch.utils.data import DataLoader

    from yolo_export.data.datasets import EpochSampler, collate

    sampler = sampler or EpochSampler(len(ds), shuffle=False)
    if int(workers) > 0:
        # make multiprocessing's temp folder here, in the parent: workers inherit it and the parent removes it at
        # exit; made by each worker, it would be left behind in the system temp folder (workers skip finalizers)
        import multiprocessing.util

        tmp = multiprocessing.util.get_temp_dir()
        if len(os.fsencode(tmp)) + len("/listener-12345678") >= AF_UNIX_PATH_MAX:
            # workers hand batches over through a Unix socket in that folder: past the limit they fail and the
            # loader would wait for them forever
            LOGGER.warning(f"loading data in the main process: the temporary folder {tmp} is too long a path "
                           "for the sockets that loader workers use (set TMPDIR to a shorter one)")
            workers = 0
    return DataLoader(ds, batch_size=max(1, int(batch)), sampler=sampler, num_workers=int(workers),
                      collate_fn=collate, pin_memory=pin, persistent_workers=int(workers) > 0)


class Validator:
    """``Validator(yolo, data="digits", split="val", batch=32).run()`` -> :class:`Metrics`.

    Works on every format: ``yolo`` may hold a PyTorch model or an exported artefact.
    """

    def __init__(self, yolo, data=None, split: str = "val", batch: int = 32, imgsz: int | None = None,
                 device: str | None = None, workers: int = 0, half: bool = False, plots: bool = False,
                 save_dir=None, progress: bool = True, predictions: bool = False, fraction: float | None = None,
                 verbose: bool | None = None, fast_preprocess: bool = False,
                 threads: int | None = None):
        self.yolo = yolo
        self.fast_preprocess = bool(fast_preprocess)
        self.threads = threads
        self.data = data
        self.split = split
        self.batch = int(batch or 32)
        self.imgsz = imgsz
        self.device = device
        self.workers = int(workers or 0)
        self.half = half
        self.plots = plots
        self.save_dir = save_dir
        self.progress = progress
        self.predictions = predictions
        self.fraction = fraction

    def _default_data(self):
        y = self.yolo
        for src in (getattr(y.model, "train_args", None), (y.ckpt or {}).get("train_args") if y.ckpt else None):
            if isinstance(src, dict) and src.get("data"):
                return src["data"]
        raise DatasetError("val needs a dataset: pass data='digits' or an ImageFolder root (--data)")

    def run(self) -> Metrics:
        from yolo_export.data.augment import EvalTransform
        from yolo_export.data.datasets import ClassificationDataset, resolve_dataset
        from yolo_export.engine.predictor import resolve_preprocess

        data = self.data or self._default_data()
        root = resolve_dataset(data)
        loaded = self.yolo.loaded_model(self.device, self.half, self.threads)
        pp = resolve_preprocess(loaded, self.imgsz, self.fast_preprocess)
        ds = ClassificationDataset(root, self.split, transform=EvalTransform(pp), fraction=self.fraction)
        mapping = match_classes(loaded.names, ds.names)
        names = [loaded.names[i] for i in sorted(loaded.names)]
        if mapping is not None:  # relabel the dataset into the model's class indices
            ds.samples = [(p, mapping[c]) for p, c in ds.samples]
        elif len(names) != len(ds.names):
            raise YoloExportError("class count mismatch")  # pragma: no cover - match_classes raises first
        loader = make_loader(ds, self.batch, self.workers)

        def predict(x):
            return loaded.run(x.numpy())

        t0 = time.perf_counter()
        counts = evaluate(predict, loader, len(names), progress=self.progress, desc=f"val {loaded.format}",
                          keep_preds=self.predictions)
        m = summarise(counts, names)
        if m["n"] == 0 and m["skipped"]:
            raise DatasetError(f"none of the {m['skipped']} image(s) of {root}/{ds.split} could be read "
                               f"(see the warnings above)")
        m.update(format=loaded.format, model=str(self.yolo.ckpt_path or self.yolo.model_name), data=str(data),
                 split=ds.split, imgsz=int(pp["crop"]), preprocess="fast" if pp.get("fast") else "exact",
                 time_s=round(time.perf_counter() - t0, 3), threads=loaded.threads)
        if self.predictions:
            order = sorted(counts["preds"])
            m["files"] = [ds.samples[i][0] for i, _ in order]
            m["predictions"] = [p[0] for _, p in order]
            # per image, for ``val --output`` (an attribute, not a key: the metrics' JSON stays as it was)
            m.per_image = {"samples": list(ds.samples), "topk": dict(order), "bad": counts["bad"]}
        if self.plots and self.save_dir:
            from pathlib import Path

            from yolo_export.engine.plots import plot_confusion_matrix

            m["confusion_matrix_png"] = str(plot_confusion_matrix(m["confusion_matrix"], names,
                                                                  Path(self.save_dir) / "confusion_matrix.png"))
        LOGGER.info(f"{m['format']} on {data}/{ds.split}: top1 {m['top1']:.4f}  top5 {m['top5']:.4f}  "
                    f"({m['n']} images; {m['speed']['inference']:.2f} ms/img inference)")
        return m
