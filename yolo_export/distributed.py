"""Scale-out on Ray: batch predict and val over Ray Data actors, and ``yexport serve --ray`` on Ray Serve.

- Each actor loads the artefact once (``YOLO(model).backend()``) and runs the project's own predict path
  (``stream_predict``) or val preprocessing (``EvalTransform``) on the batches it is given.
- Ray Data keeps the input order (``preserve_order``) and retries the tasks of an actor that dies (``max_restarts`` /
  ``max_task_retries``): a killed worker costs no result and writes no duplicate.
- The driver collects the rows in input order and appends them to ``--output`` as they come (JSON Lines; a
  ``.parquet`` output is journalled as JSON Lines beside it and written atomically at the end), so what is written is
  always a prefix of the inputs: a rerun after an interruption checks that prefix and predicts only the rest.

Ray is imported inside functions: ``yexport --help`` never imports it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

from yolo_export.errors import ArgumentError, ImageError, MissingDependency, YoloExportError
from yolo_export.utils import LOGGER

LOCAL_OBJECT_STORE = 256 * 2**20  # a local cluster started here moves only paths and small rows


def require_ray() -> None:
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None:
        raise MissingDependency("--ray", "ray")


def init_ray(address: str | None = None, num_cpus: int | None = None,
             object_store_memory: int = LOCAL_OBJECT_STORE):
    """Join ``address`` (a running cluster) or start a local one; reuses a connection already made."""
    require_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import logging

    import ray

    if ray.is_initialized():
        return ray
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, object_store_memory=object_store_memory, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
    return ray


# ------------------------------------------------------------------------------ actors (run on Ray workers)
def actor_threads(threads=None) -> int:
    """Runtime threads in each actor, by the project's policy (``yolo_export.threads``), decided on the driver:
    ``--threads`` > the driver's ``YOLO_EXPORT_THREADS`` > the CPUs an actor holds (one: Ray reserves one CPU per
    actor, and the machine's cores are shared by every actor on it)."""
    from yolo_export.threads import ENV, resolve

    return resolve(threads) if threads or os.environ.get(ENV, "").strip() else 1


class PredictActor:
    """Loads the artefact once; ``__call__`` classifies a batch of paths with ``stream_predict``."""

    def __init__(self, model: str, imgsz: int | None = None, device: str = "cpu", threads: int | None = None,
                 fast_preprocess: bool = False):
        from yolo_export import YOLO

        n = actor_threads(threads)  # already decided on the driver; kept whole for direct use
        self.backend = YOLO(model, device=device, threads=n).backend(device, threads=n)
        self.kw = {"imgsz": imgsz, "workers": 0, "fast_preprocess": fast_preprocess}

    def __call__(self, batch: dict) -> dict:
        paths = [str(p) for p in batch["path"]]
        rows = predict_rows(self.backend, paths, len(paths), **self.kw)
        return {"index": np.asarray(batch["index"]), "row": np.asarray([json.dumps(r) for r in rows], dtype=object),
                "threads": np.full(len(paths), self.backend.threads or 0)}


def predict_rows(backend, paths: list[str], batch: int, **kw) -> list[dict]:
    """One row per path, in order; an unreadable image gets a row with ``error`` instead of stopping the run."""
    from yolo_export.engine.predictor import stream_predict

    try:
        return [_row(r) for r in stream_predict(backend, paths, batch=batch, **kw)]
    except ImageError:  # one bad file: classify the rest one by one, the bad one gets an error row
        rows = []
        for p in paths:
            try:
                rows.append(_row(next(iter(stream_predict(backend, [p], **kw)))))
            except ImageError as e:
                rows.append({"path": p, "top1": None, "name": None, "confidence": None, "top5": [],
                             "error": str(e)})
        return rows


ROW_KEYS = ("path", "top1", "name", "confidence", "top5")  # the answers; timings and thread counts vary by run


def _row(r) -> dict:
    d = r.to_dict()
    return {**{k: d[k] for k in ROW_KEYS}, "error": None}


class ValActor:
    """Loads the artefact once; ``__call__`` returns the class probabilities of a batch of (path, label) rows,
    preprocessed as ``yexport val`` does (``EvalTransform``)."""

    def __init__(self, model: str, imgsz: int | None = None, device: str = "cpu", threads: int | None = None):
        from yolo_export import YOLO
        from yolo_export.data.augment import EvalTransform
        from yolo_export.engine.predictor import resolve_preprocess

        n = actor_threads(threads)  # already decided on the driver; kept whole for direct use
        self.backend = YOLO(model, device=device, threads=n).backend(device, threads=n)
        self.transform = EvalTransform(resolve_preprocess(self.backend, imgsz))

    def __call__(self, batch: dict) -> dict:
        good, arrays, errors = [], [], []
        for i, p in enumerate(batch["path"]):
            try:
                arrays.append(self.transform(str(p)))
                good.append(i)
            except ImageError as e:
                errors.append(str(e))
        nc = len(self.backend.names)
        probs = np.full((len(batch["path"]), nc), np.nan, np.float32)
        if arrays:
            probs[good] = self.backend.run(np.stack(arrays))
        return {"index": np.asarray(batch["index"]), "label": np.asarray(batch["label"]), "probs": probs,
                "threads": np.full(len(batch["path"]), self.backend.threads or 0)}


# ------------------------------------------------------------------------------ the driver
def _actors(ray, concurrency: int | None) -> int:
    return max(1, int(concurrency or ray.cluster_resources().get("CPU", 1)))


def map_in_order(ray, rows: list[dict], actor_cls, ctor: dict, batch: int, concurrency: int | None):
    """Ray Data over ``rows`` with one actor per CPU (or ``concurrency``); yields the output batches in input
    order. A dead actor is restarted and its task retried by Ray (Ray Data's defaults for actor pools:
    ``max_restarts=-1``, ``max_task_retries=-1``)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    n_blocks = max(1, min(len(rows), (len(rows) + batch - 1) // batch))
    ds = ray.data.from_items(rows, override_num_blocks=n_blocks)
    ds = ds.map_batches(actor_cls, fn_constructor_kwargs=ctor, batch_size=batch, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=_actors(ray, concurrency)), num_cpus=1)
    yield from ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1)


def list_inputs(source) -> list[str]:
    from yolo_export.data.sources import iter_items

    sources = source if isinstance(source, (list, tuple)) else [source]
    out = []
    for s in sources:
        if not isinstance(s, (str, Path)):
            raise ArgumentError("--ray predicts files: give a file, directory or glob")
        out.extend(str(it.path) for it in iter_items(s))
    return out


class ResultsWriter:
    """Appends rows in input order to ``output`` (.jsonl) or to a JSON Lines journal beside a ``.parquet`` output
    that ``close()`` turns into the Parquet file atomically. ``done`` rows already written are checked to be the
    prefix of this run's inputs and skipped."""

    def __init__(self, output: str | Path, paths: list[str]):
        self.output = Path(output)
        suffix = self.output.suffix.lower()
        if suffix not in (".jsonl", ".parquet"):
            raise ArgumentError(f"--output must end in .jsonl or .parquet (got {self.output.name})")
        self.parquet = suffix == ".parquet"
        if self.parquet and importlib.util.find_spec("pyarrow") is None:
            raise MissingDependency("--output .parquet", "ray", "missing pyarrow")
        self.journal = self.output.with_name(self.output.name + ".partial.jsonl") if self.parquet else self.output
        if self.parquet and self.output.exists() and not self.journal.exists():
            self.rows = self._read_parquet()
            self._journal_from(self.rows)
        else:
            self.rows = self._read_journal()
        self._check_prefix(paths)
        self.done = len(self.rows)
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.journal, "a", encoding="utf-8")

    def _read_journal(self) -> list[dict]:
        if not self.journal.exists():
            return []
        rows, good = [], 0
        with open(self.journal, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # the last line of an interrupted run
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    break
                good += len(line)
        if good != self.journal.stat().st_size:
            with open(self.journal, "r+b") as f:
                f.truncate(good)
        return rows

    def _read_parquet(self) -> list[dict]:
        import pyarrow.parquet as pq

        return pq.read_table(self.output).to_pylist()

    def _journal_from(self, rows):
        with open(self.journal, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    def _check_prefix(self, paths):
        for i, r in enumerate(self.rows):
            if i >= len(paths) or r.get("path") != paths[i] or r.get("index") != i:
                raise YoloExportError(f"{self.output} holds results of other inputs (row {i}: {r.get('path')}); "
                                      "choose another --output")

    def write(self, row: dict):
        self.f.write(json.dumps(row) + "\n")
        self.rows.append(row)

    def flush(self):
        self.f.flush()

    def close(self, complete: bool):
        self.f.close()
        if self.parquet and complete:
            import pyarrow as pa
            import pyarrow.parquet as pq

            tmp = self.output.with_name(f".{self.output.name}.tmp")
            pq.write_table(pa.Table.from_pylist(self.rows), tmp)
            os.replace(tmp, self.output)
            self.journal.unlink()


def ray_predict(model, source, output, address: str | None = None, imgsz: int | None = None, batch: int = 16,
                device: str = "cpu", threads: int | None = None, actors: int | None = None,
                num_cpus: int | None = None, fast_preprocess: bool = False, progress: bool = True) -> dict:
    """Classify every image of ``source`` on Ray actors; rows in input order in ``output``. Returns a summary
    (with ``threads``: the runtime thread counts the actors reported)."""
    import time

    paths = list_inputs(source)
    writer = ResultsWriter(output, paths)
    todo = [{"index": i, "path": p} for i, p in enumerate(paths) if i >= writer.done]
    t0, complete, seen = time.perf_counter(), False, set()
    try:
        if todo:
            ray = init_ray(address, num_cpus)
            ctor = {"model": _abs(model), "imgsz": imgsz, "device": device, "threads": actor_threads(threads),
                    "fast_preprocess": fast_preprocess}
            batches = map_in_order(ray, todo, PredictActor, ctor, batch, actors)
            _write_batches(batches, writer, len(paths), progress, seen)
        complete = len(writer.rows) == len(paths)
    finally:
        writer.close(complete)
    dt = time.perf_counter() - t0
    return {"output": str(writer.output), "images": len(paths), "skipped_already_written": writer.done,
            "predicted": len(todo), "errors": sum(1 for r in writer.rows if r.get("error")), "time_s": round(dt, 3),
            "images_per_s": round(len(todo) / dt, 2) if todo and dt else None, "threads": sorted(seen)}


def _write_batches(batches, writer, total: int, progress: bool, seen: set) -> None:
    from tqdm import tqdm

    with tqdm(total=total, initial=writer.done, desc="predict (ray)", disable=not progress, mininterval=0.5,
              dynamic_ncols=True) as bar:
        for out in batches:
            for i, row in zip(out["index"], out["row"]):
                writer.write({"index": int(i), **json.loads(row)})
            seen.update(int(t) for t in out["threads"])
            writer.flush()
            bar.update(len(out["index"]))


def _abs(model) -> str:
    return str(Path(model).resolve()) if Path(str(model)).exists() else str(model)


def ray_val(model, data, split: str = "val", address: str | None = None, imgsz: int | None = None, batch: int = 32,
            device: str = "cpu", threads: int | None = None, actors: int | None = None, num_cpus: int | None = None,
            fraction: float | None = None, progress: bool = True, predictions: bool = False):
    """``yexport val`` with the images preprocessed and classified on Ray actors; the driver counts with the same
    ``evaluate``/``summarise`` as local val, so the metrics are the same. ``predictions``: as local val's (the
    ``files``/``predictions`` keys and the ``per_image`` attribute that ``val --output`` writes)."""
    import time

    from yolo_export import YOLO
    from yolo_export.data.datasets import ClassificationDataset, resolve_dataset
    from yolo_export.engine.validator import Validator, evaluate, match_classes, summarise

    y = YOLO(model)
    data = data or Validator(y)._default_data()
    ds = ClassificationDataset(resolve_dataset(data), split, fraction=fraction)
    mapping = match_classes(y.names, ds.names)
    names = [y.names[i] for i in sorted(y.names)]
    samples = [(str(p), int(mapping[c] if mapping else c)) for p, c in ds.samples]
    ray = init_ray(address, num_cpus)
    ctor = {"model": _abs(model), "imgsz": imgsz, "device": device, "threads": actor_threads(threads)}
    loader = _ValLoader(map_in_order(ray, [{"index": i, "path": p, "label": c} for i, (p, c) in enumerate(samples)],
                                     ValActor, ctor, batch, actors), samples, batch)
    t0 = time.perf_counter()
    counts = evaluate(lambda x: x, loader, len(names), progress=progress, desc=f"val {y.format} (ray)",
                      keep_preds=predictions)
    m = summarise(counts, names)
    m.update(format=y.format, model=str(y.ckpt_path or y.model_name), data=str(data), split=ds.split,
             imgsz=int(imgsz or y.imgsz), time_s=round(time.perf_counter() - t0, 3), ray=True,
             threads=min(loader.threads) if loader.threads else None)
    if predictions:
        order = sorted(counts["preds"])
        m["files"] = [samples[i][0] for i, _ in order]
        m["predictions"] = [p[0] for _, p in order]
        m.per_image = {"samples": samples, "topk": dict(order), "bad": counts["bad"]}
    LOGGER.info(f"{m['format']} on {data}/{ds.split} (ray): top1 {m['top1']:.4f}  top5 {m['top5']:.4f}  "
                f"({m['n']} images)")
    return m


class _ValLoader:
    """The actors' output batches as ``evaluate`` reads a loader: (probs, labels, indices, undecodable)."""

    def __init__(self, batches, samples: list, batch: int):
        self.batches, self.samples, self.batch, self.threads = batches, samples, batch, set()

    def __len__(self):
        return (len(self.samples) + self.batch - 1) // self.batch

    def __iter__(self):
        import torch

        for b in self.batches:
            self.threads.update(int(t) for t in b["threads"])
            ok = ~np.isnan(b["probs"]).any(1)
            bad = [(self.samples[int(i)][0], "cannot be decoded") for i in b["index"][~ok]]
            if not ok.any():
                yield None, None, None, bad
                continue
            yield (torch.from_numpy(b["probs"][ok]), torch.from_numpy(b["label"][ok].astype(np.int64)),
                   torch.from_numpy(b["index"][ok].astype(np.int64)), bad)


VAL_SUFFIXES = (".jsonl", ".parquet", ".csv")


def check_val_output(output) -> Path:
    """``val --output`` checked before any work: its suffix, and an existing path must be an earlier ``val --output``
    (whether it holds these images is checked again once they are known)."""
    from yolo_export.errors import OutputError

    out = Path(output)
    if out.suffix.lower() not in VAL_SUFFIXES:
        raise ArgumentError(f"--output must end in {', '.join(VAL_SUFFIXES)} (got {out.name})")
    if out.is_dir() or (out.exists() and _earlier_val_rows(out) is None):
        raise OutputError(f"{out} exists and is not an earlier val --output; choose another --output")
    return out


def _earlier_val_rows(path: Path) -> list[dict] | None:
    """The rows of an earlier ``val --output`` at ``path``; None when it is unreadable or not one."""
    try:
        old = _read_table(path)
    except Exception:  # noqa: BLE001 - unreadable: not ours
        return None
    return old if all("correct" in r for r in old) else None


def write_val_rows(m, output, names) -> dict:
    """``val --output FILE``: one row per image of the split, in dataset order: ``index, path, label, label_name,
    top1, name, top5, correct`` (an undecodable image: ``error`` set, no prediction). The same rows from local and
    Ray val. Written atomically; an existing file is replaced only if it is an earlier ``val --output`` of the same
    images (anything else is refused, never overwritten)."""
    from yolo_export.errors import OutputError

    out = check_val_output(output)
    rows = val_rows(m.per_image, names)
    if out.exists() and [r.get("path") for r in _earlier_val_rows(out) or []] != [r["path"] for r in rows]:
        raise OutputError(f"{out} exists and is not an earlier val --output of these images; choose another --output")
    tmp = out.with_name(f".{out.name}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_table(tmp, rows)
    os.replace(tmp, out)
    return {"output": str(out), "rows": len(rows), "correct": sum(1 for r in rows if r["correct"])}


def val_rows(per_image: dict, names) -> list[dict]:
    topk, bad = per_image["topk"], set(per_image["bad"])
    names = {i: n for i, n in enumerate(names)} if isinstance(names, (list, tuple)) else names
    rows = []
    for i, (path, label) in enumerate(per_image["samples"]):
        t = topk.get(i)
        row = {"index": i, "path": str(path), "label": int(label), "label_name": names.get(int(label)),
               "top1": t[0] if t else None, "name": names.get(t[0]) if t else None, "top5": list(t) if t else [],
               "correct": bool(t) and t[0] == int(label), "error": None}
        if t is None:
            row["error"] = "cannot be decoded" if str(path) in bad else "not classified"
        rows.append(row)
    return rows


def _write_table(path: Path, rows: list[dict]) -> None:
    kind = path.name.rsplit(".", 2)[-2].lower()  # .NAME.SUFFIX.tmp
    if kind == "parquet":
        if importlib.util.find_spec("pyarrow") is None:
            raise MissingDependency("--output .parquet", "ray", "missing pyarrow")
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif kind == "csv":
        import csv

        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["index"])
            w.writeheader()
            w.writerows({**r, "top5": " ".join(map(str, r["top5"]))} for r in rows)
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


def _read_table(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix == ".csv":
        import csv

        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------ serve on Ray Serve
class ServeReplica:
    """One Ray Serve replica: builds ``yexport serve``'s app (``serving.build_app``) from the config, once."""

    def __init__(self, cfg_json: str):
        from yolo_export.serving import ServeConfig

        self.cfg = ServeConfig(**json.loads(cfg_json))

    def __serve_build_asgi_app__(self):
        from yolo_export.serving import build_app

        return build_app(self.cfg, load_async=False)


def serve_on_ray(cfg, address: str | None, host: str, port: int, replicas: int, on_started=None) -> None:
    """The same FastAPI app as ``yexport serve``, as ``replicas`` Ray Serve replicas behind Ray's HTTP proxy;
    blocks until SIGINT/SIGTERM, then shuts the application and Ray down and exits the process (the body of
    ``yexport serve --ray``)."""
    import signal
    import threading

    from yolo_export.serving import require_serving

    require_serving()
    ray = init_ray(address, None)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # after ray.init, whose own handler exits with status 15
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    dep = serve.deployment(name="yexport", num_replicas=replicas,
                           ray_actor_options={"num_cpus": 1})(serve.ingress()(ServeReplica))
    serve.run(dep.bind(cfg.to_env()), name="yexport", route_prefix="/", blocking=False)
    if on_started:
        on_started()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
    # Ray's C++ core can abort (SIGABRT) while the interpreter tears down after ray.shutdown(); the shutdown is
    # done and nothing is left to write, so leave now with the clean status.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def predict_to_file(model, source, output, ray: bool = False, address: str | None = None, imgsz: int | None = None,
                    batch: int = 1, device: str | None = None, fast_preprocess: bool = False,
                    progress: bool = True, threads: int | None = None) -> dict:
    """``yexport predict --output FILE [--ray [ADDRESS]]``: rows in input order; a rerun skips what is written."""
    if not output:
        raise ArgumentError("--ray writes its results to a file: add --output results.jsonl (or .parquet)")
    if ray:
        return ray_predict(model, source, output, address=address, imgsz=imgsz, batch=max(int(batch or 1), 16),
                           device=device or "cpu", fast_preprocess=fast_preprocess, progress=progress,
                           threads=threads)
    import time

    from yolo_export import YOLO

    t0 = time.perf_counter()
    paths = list_inputs(source)
    writer = ResultsWriter(output, paths)
    todo = paths[writer.done:]
    complete = False
    try:
        if todo:
            backend = YOLO(model, device=device, threads=threads).backend(device, threads=threads)
            kw = {"imgsz": imgsz, "fast_preprocess": fast_preprocess}
            step = max(64, int(batch or 1))
            for start in range(0, len(todo), step):
                rows = predict_rows(backend, todo[start:start + step], int(batch or 1), **kw)
                for i, row in enumerate(rows, start=writer.done + start):
                    writer.write({"index": i, **row})
        complete = len(writer.rows) == len(paths)
    finally:
        writer.close(complete)
    return {"output": str(writer.output), "images": len(paths), "skipped_already_written": writer.done,
            "predicted": len(todo), "errors": sum(1 for r in writer.rows if r.get("error")),
            "time_s": round(time.perf_counter() - t0, 3)}
