"""``yexport serve``: any artefact behind HTTP (FastAPI on uvicorn; the same app as Ray Serve replicas).

One ASGI app, built by ``build_app(cfg)``:

- ``POST /predict`` takes one or more images (multipart upload, or the raw bytes of one image as the body; URLs are
  never fetched) and answers the same JSON as ``yexport predict --json`` (a list of ``Results.to_dict()``, with the
  runtime's real thread count);
- ``GET /health`` (liveness), ``GET /ready`` (200 once the model is loaded, in every worker; 503 before),
  ``GET /metadata``, ``GET /metrics`` (Prometheus text; with ``--replicas N`` on one machine, the sum over the
  workers, through prometheus_client's multiprocess mode), ``GET /`` (a small page: drop an image, see the top-5);
- each image is decoded and preprocessed by the project's own code (``data.transforms``) in a worker thread, which
  hands it straight to the runtime thread; the runtime thread groups the images waiting for it into one call
  (``--max-batch``, ``--batch-wait-ms``; ``--max-batch 1`` turns batching off). ``LoadedModel.run`` pads fixed-batch
  artefacts as predict does. The event loop only parses HTTP and writes JSON: it is never on the runtime's path,
  and ``POST /predict`` is plain ASGI (FastAPI serves the other, light endpoints);
- every bad request is a 4xx with the CLI's error document ``{"error": ..., "type": ...}`` (``type`` one of
  ``errors.DOCUMENTED``) and the server keeps serving. Budgets are checked before anything is allocated: requests
  being served (``--max-concurrency``: over it, 503 before the body is read), the body size (from Content-Length,
  then while reading), the number of images, and the pixel count from the image header before decoding. Memory for
  bodies is therefore bounded by ``max_concurrency x max_upload_mb``.

The serving libraries (fastapi, uvicorn, prometheus_client) are imported inside functions: ``yexport --help``
never imports them.
"""

import asyncio
import io
import json
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from yolo_export.errors import (ArgumentError, ImageError, LimitError, MissingDependency, NotAvailable,
                                YoloExportError, user_error)

PAGE = Path(__file__).with_name("serve_page.html")
CONFIG_ENV = "YOLO_EXPORT_SERVE_CONFIG"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# HTTP status of each error class (the first match along the class's MRO); anything else is a 500
STATUS = (("ArgumentError", 400), ("LimitError", 413), ("ImageError", 415), ("NotAvailable", 503))


@dataclass
class ServeConfig:
    model: str
    device: str = "cpu"
    threads: int | None = None
    max_batch: int = 8
    batch_wait_ms: float = 0.0   # batches form from what queued while the runtime was busy (serve_load.py)
    max_upload_mb: float = 20.0
    max_images: int = 16
    max_pixels: int = 40_000_000
    max_concurrency: int = 64    # POST requests served at once; over it: 503 before the body is read
    body_timeout_s: float = 30.0  # a POST body must arrive within this, else 408: a slow client cannot hold a slot
    fast_preprocess: bool = False
    prep_workers: int | None = None  # decode/preprocess threads; default: predict's (one per CPU, at most 4)
    replicas: int = 1                # worker processes on this machine (the shared dir aggregates them)
    shared_dir: str | None = None    # the workers' shared folder: metrics files, readiness marks
    extra: dict = field(default_factory=dict)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "ServeConfig":
        return cls(**json.loads(os.environ[CONFIG_ENV]))


def require_serving() -> None:
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client", "multipart")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependency("yexport serve", "serve", f"{', '.join(missing)} not installed")


# ------------------------------------------------------------------------------ error documents
def http_status(err: BaseException) -> int:
    for cls in type(err).__mro__:
        for name, status in STATUS:
            if cls.__name__ == name:
                return status
    return 500


def error_doc(err: BaseException) -> bytes:
    """The CLI's error document (``cli.fail``): one line and the documented class name."""
    e = user_error(err)
    text = str(e).strip()
    return json.dumps({"error": text.splitlines()[0] if text else "failed", "type": type(e).__name__}).encode()


# ------------------------------------------------------------------------------ the model side
class ModelService:
    """Loads the artefact once (in a background thread, so /health answers at once) and turns bytes into Results."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.backend = None
        self.pp = None
        self.error: YoloExportError | None = None
        self.loaded = threading.Event()

    def load(self) -> None:
        try:
            from yolo_export import YOLO
            from yolo_export.engine.predictor import resolve_preprocess

            y = YOLO(self.cfg.model, device=self.cfg.device, threads=self.cfg.threads)
            self.backend = y.backend(self.cfg.device, threads=self.cfg.threads)
            self.pp = resolve_preprocess(self.backend, None, self.cfg.fast_preprocess)
            self.backend.run(np.zeros((1, 3, self.pp["crop"], self.pp["crop"]), np.float32))  # warm up
        except Exception as e:  # noqa: BLE001 - reported by /ready and /predict, one line
            self.backend, self.error = None, user_error(e)
        finally:
            self.loaded.set()

    @property
    def ready(self) -> bool:
        return self.backend is not None

    def not_ready(self) -> YoloExportError:
        if self.error is None:
            return NotAvailable("model is loading")
        cls = NotAvailable if isinstance(self.error, MissingDependency) else type(self.error)
        return cls(f"model failed to load: {self.error}")

    @property
    def threads(self) -> int | None:
        return self.backend.threads if self.backend is not None else None

    def prepare(self, data: bytes, name: str):
        """Bytes of one image -> (CHW float32, (h, w), ms). Pixel budget checked from the header, before decoding."""
        from PIL import Image

        from yolo_export.data.transforms import open_image, preprocess

        t0 = time.perf_counter()
        if not data:
            raise ArgumentError(f"{name}: empty image")
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
        except Exception:  # noqa: BLE001 - any failure to identify is "not an image"
            raise ImageError(f"{name}: not an image this server can read") from None
        if w * h > self.cfg.max_pixels:
            raise LimitError(f"{name}: {w}x{h} = {w * h} pixels is over the limit of {self.cfg.max_pixels} "
                             "(--max-pixels)")
        try:
            im = open_image(io.BytesIO(data), draft_to=self.pp["resize"] if self.pp.get("fast") else None)  # exact
        except ImageError as e:
            raise ImageError(f"{name}: {str(e).split(': ', 1)[-1]}") from None
        except Exception as e:  # noqa: BLE001 - a decoder failing on hostile bytes is a bad request
            raise ImageError(f"{name}: cannot decode image ({type(e).__name__})") from None
        return preprocess(im, self.pp), (im.size[1], im.size[0]), (time.perf_counter() - t0) * 1e3

    def run(self, arrays: list) -> np.ndarray:
        return self.backend.run(np.stack(arrays))

    def result(self, name: str, shape, pre_ms: float, probs, infer_ms: float) -> dict:
        """One image's answer, as ``yexport predict --json`` writes it."""
        from yolo_export.engine.results import Results

        t = time.perf_counter()
        r = Results(probs, self.backend.names, path=name, orig_shape=shape)
        r.preprocess = "fast" if self.pp.get("fast") else "exact"
        r.threads = self.backend.threads
        r.speed = {"preprocess": pre_ms, "inference": infer_ms, "postprocess": (time.perf_counter() - t) * 1e3}
        return r.to_dict()

    def metadata(self) -> dict:
        b = self.backend
        md = b.metadata
        keep = ("description", "version", "date", "imgsz", "batch", "args", "verification", "preprocess")
        out = {"model": Path(self.cfg.model).name, "format": b.format, "names": b.names, "nc": len(b.names),
               "fixed_batch": b.fixed_batch, "dynamic": b.dynamic, "threads": b.threads}
        out.update({k: md[k] for k in keep if k in md})
        c = self.cfg
        out["serve"] = {"max_batch": c.max_batch, "batch_wait_ms": c.batch_wait_ms, "max_upload_mb": c.max_upload_mb,
                        "max_images": c.max_images, "max_pixels": c.max_pixels, "max_concurrency": c.max_concurrency,
                        "replicas": c.replicas, "preprocess": "fast" if self.pp.get("fast") else "exact",
                        "pid": os.getpid()}
        return out


class Batcher:
    """The runtime thread: takes the arrays that preprocessing threads ``put`` and runs them, grouped into calls of
    up to ``max_batch`` (waiting at most ``wait_ms`` after the first for more when nothing else is queued). Each
    array's ``done`` callback gets ``(probs, ms per image, call start, call end)`` or the exception, in the runtime
    thread.

    Nothing waits for the event loop on this path: when the runtime finishes a call, the next batch is already
    queued (under load) and starts at once."""

    def __init__(self, fn, max_batch: int, wait_ms: float, on_batch=None):
        self.fn, self.max_batch, self.wait = fn, max(1, int(max_batch)), max(0.0, wait_ms) / 1e3
        self.on_batch = on_batch
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def put(self, array, done) -> None:
        if self.thread is None:
            with self.lock:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._loop, name="yexport-runtime", daemon=True)
                    self.thread.start()
        self.queue.put((array, done))

    async def submit(self, arrays: list) -> list:
        """From a coroutine: ``[(probs, ms, start, end), ...]`` for ``arrays``."""
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in arrays]
        for a, f in zip(arrays, futs):
            self.put(a, settler(loop, f))
        return await asyncio.gather(*futs)

    def _take(self) -> list | None:
        first = self.queue.get()
        if first is None:
            return None
        batch, deadline = [first], time.monotonic() + self.wait
        while len(batch) < self.max_batch:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = self.queue.get(timeout=left)
                except queue.Empty:
                    break
            if item is None:
                self.queue.put(None)  # close() after these: run them, then stop
                break
            batch.append(item)
        return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            self._run(batch)

    def _run(self, batch: list) -> None:
        t0 = time.perf_counter()
        try:
            probs = self.fn([a for a, _ in batch])
        except Exception as e:  # noqa: BLE001 - each waiting request gets the error
            for _, done in batch:
                done(e)
            return
        t1 = time.perf_counter()
        ms = (t1 - t0) * 1e3 / len(batch)
        if self.on_batch:
            self.on_batch(len(batch))
        for (_, done), p in zip(batch, probs):
            done((p, ms, t0, t1))

    def close(self) -> None:
        if self.thread is not None:
            self.queue.put(None)


def settler(loop, fut):
    """A callback for another thread that settles ``fut`` (a result, or an exception) on ``loop``."""

    def settle(value):
        if not fut.done():
            if isinstance(value, BaseException):
                fut.set_exception(value)
            else:
                fut.set_result(value)

    return lambda value: loop.call_soon_threadsafe(settle, value)


class Pipeline:
    """Bytes of the images of one request -> their answers: decode + preprocess in the prep pool, whose thread
    hands the array straight to the runtime thread; the event loop awaits one future per image.

    Where each image's time went is recorded (``on_stages``): waiting for a prep thread, decode + preprocess,
    waiting for the runtime (the queue and the batcher's wait), the runtime call, back to the event loop, and
    building the answer."""

    STAGES = ("prep_wait", "prep", "runtime_wait", "runtime", "return", "answer")

    def __init__(self, svc: ModelService, batcher: Batcher, workers: int, on_stages=None):
        from concurrent.futures import ThreadPoolExecutor

        self.svc, self.batcher, self.on_stages = svc, batcher, on_stages
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="yexport-prep")

    def _prep_and_queue(self, data: bytes, name: str, done) -> None:
        t0 = time.perf_counter()
        try:
            arr, shape, pre_ms = self.svc.prepare(data, name)
        except Exception as e:  # noqa: BLE001 - answered to this request
            return done(e)
        t1 = time.perf_counter()
        self.batcher.put(arr, lambda r: done(r if isinstance(r, BaseException) else (*r, shape, pre_ms, t0, t1)))

    async def classify(self, imgs: list[tuple[str, bytes]]) -> list[dict]:
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in imgs]
        t_in = time.perf_counter()
        for (name, data), f in zip(imgs, futs):
            self.pool.submit(self._prep_and_queue, data, name, settler(loop, f))
        outs = await asyncio.gather(*futs, return_exceptions=True)
        t_back = time.perf_counter()
        for o in outs:
            if isinstance(o, BaseException):
                raise o
        answers = [self.svc.result(name, o[4], o[5], o[0], o[1]) for (name, _), o in zip(imgs, outs)]
        if self.on_stages:
            t_out = time.perf_counter()
            for _, _, r0, r1, _, _, p0, p1 in outs:
                self.on_stages((p0 - t_in, p1 - p0, r0 - p1, r1 - r0, t_back - r1, (t_out - t_back) / len(outs)))
        return answers

    def close(self) -> None:
        self.batcher.close()
        self.pool.shutdown(wait=False)


# ------------------------------------------------------------------------------ metrics and readiness
class Metrics:
    """Prometheus counters and histograms. With a shared dir (``--replicas N`` on one machine), every worker writes
    its values there (prometheus_client's multiprocess mode, chosen by ``PROMETHEUS_MULTIPROC_DIR`` before the
    library loads) and ``/metrics`` answers the sum over all the workers, whichever one is asked."""

    def __init__(self, shared_dir: str | None = None):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

        self.shared = shared_dir if shared_dir and os.environ.get(MULTIPROC_ENV) == shared_dir else None
        self.registry = r = CollectorRegistry()
        self.requests = Counter("yexport_requests", "HTTP requests by path and status", ["path", "status"], registry=r)
        self.errors = Counter("yexport_errors", "Requests answered with an error, by status", ["status"], registry=r)
        self.images = Counter("yexport_images", "Images classified", registry=r)
        self.latency = Histogram("yexport_request_latency_seconds", "POST /predict latency", registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch = Histogram("yexport_batch_size", "Images per runtime call", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64))
        self.in_flight = Gauge("yexport_in_flight", "POST requests being served", registry=r,
                               multiprocess_mode="livesum")
        self.refused = Counter("yexport_refused_busy", "POST requests refused over --max-concurrency", registry=r)
        self.stage = Summary("yexport_stage_seconds", "Where each image's time went (Pipeline.STAGES)", ["stage"],
                             registry=r)

        if not self.shared:
            r.register(ThreadCPU())

    def stages(self, secs) -> None:
        for name, v in zip(Pipeline.STAGES, secs):
            self.stage.labels(name).observe(v)

    def text(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if not self.shared:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        r = CollectorRegistry()
        MultiProcessCollector(r, path=self.shared)
        return generate_latest(r), CONTENT_TYPE_LATEST

    def close(self) -> None:
        if self.shared:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self.shared)


class ThreadCPU:
    """A Prometheus collector: CPU seconds used so far by this process's threads, by role (the event loop, the
    prep pool, the runtime thread, other), read from each thread's CPU clock at scrape time. The runtime's own
    pool threads, if any, count under ``other``."""

    ROLES = (("MainThread", "event_loop"), ("yexport-prep", "prep"), ("yexport-runtime", "runtime"))

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        used = dict.fromkeys([r for _, r in self.ROLES] + ["other"], 0.0)
        named = 0.0
        for t in threading.enumerate():
            try:
                cpu = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
            except (OSError, AttributeError, TypeError):
                continue
            named += cpu
            used[next((r for prefix, r in self.ROLES if t.name.startswith(prefix)), "other")] += cpu
        total = time.process_time()
        used["other"] += max(0.0, total - named)  # threads Python does not know: the runtime's pools, libraries
        fam = CounterMetricFamily("yexport_thread_cpu_seconds", "CPU seconds by thread role", labels=["role"])
        for role, v in used.items():
            fam.add_metric([role], v)
        yield fam


def ready_workers(cfg: ServeConfig, svc: ModelService) -> int:
    """Workers whose model is loaded: this one alone, or the live pids that marked the shared dir."""
    if not cfg.shared_dir or cfg.replicas <= 1:
        return int(svc.ready)
    n = 0
    for p in Path(cfg.shared_dir).glob("ready.*"):
        try:
            os.kill(int(p.suffix[1:]), 0)
            n += 1
        except (ValueError, ProcessLookupError, PermissionError):
            continue
    return n


def mark_ready(cfg: ServeConfig, svc: ModelService) -> None:
    if cfg.shared_dir and svc.ready:
        (Path(cfg.shared_dir) / f"ready.{os.getpid()}").touch()


# ------------------------------------------------------------------------------ the ASGI guard
class Guard:
    """Pure ASGI middleware in front of the app: the concurrency cap and the body limit (both before the body is
    read), and the request counters. A body declared too large (Content-Length) is answered 413 at once, unread,
    with ``connection: close``, and its slot goes back; a chunked body is read up to the limit, then the same. On
    uvicorn, ``serve_http.ServeHTTP`` stages that close, so the client reads the answer instead of a reset."""

    def __init__(self, app, cfg: ServeConfig, metrics: Metrics, predict=None):
        self.app, self.metrics, self.predict = app, metrics, predict
        self.limit, self.cap = int(cfg.max_upload_mb * 2**20), max(1, int(cfg.max_concurrency))
        self.body_timeout = float(cfg.body_timeout_s)
        self.active = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        status = [500]

        async def counted_send(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            if self.predict is not None and scope["path"] == "/predict" and scope["method"] != "POST":
                err = ArgumentError(f"{scope['method']} /predict: method not allowed (POST the image)")
                return await respond(counted_send, 405, error_doc(err), extra=[(b"allow", b"POST")])
            if scope["method"] not in ("POST", "PUT"):
                return await self.app(scope, receive, counted_send)
            return await self._post(scope, receive, counted_send)
        finally:
            self.metrics.requests.labels(path, str(status[0])).inc()
            if status[0] >= 400:
                self.metrics.errors.labels(str(status[0])).inc()

    async def _post(self, scope, receive, send):
        if self.active >= self.cap:
            self.metrics.refused.inc()
            busy = NotAvailable(f"server busy: {self.active} requests in flight (--max-concurrency {self.cap}); "
                                "retry shortly")
            return await respond(send, 503, error_doc(busy), close=True, extra=[(b"retry-after", b"1")])
        self.active += 1
        try:
            try:
                declared = dict(scope.get("headers") or []).get(b"content-length")
                if declared is not None and declared.isdigit() and int(declared) > self.limit:
                    return await self._refuse(send, int(declared))  # unread: the slot goes back at once
                body = await asyncio.wait_for(self._read(receive), self.body_timeout)
            except asyncio.TimeoutError:   # slowloris: the slot goes back, the client gets one line
                err = LimitError(f"request body not received within {self.body_timeout:g} s")
                return await respond(send, 408, error_doc(err), close=True)
            if body is None:
                return None
            if len(body) > self.limit:
                return await self._refuse(send, len(body))
            app = self.predict if self.predict is not None and scope["path"] == "/predict" else self.app
            return await app(scope, replayer(body, receive), send)
        finally:
            self.active -= 1

    async def _read(self, receive) -> bytearray | None:
        body, more = bytearray(), True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.limit:
                break
        return body

    async def _refuse(self, send, size):
        mb = self.limit / 2**20
        err = LimitError(f"request body of {size} bytes is over the limit of {mb:g} MB (--max-upload-mb)")
        await respond(send, 413, error_doc(err), close=True)


def replayer(body: bytearray, receive):
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    return replay


async def respond(send, status: int, body: bytes, close: bool = False, extra=()):
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------ the HTTP side
async def read_images(request, cfg: ServeConfig) -> list[tuple[str, bytes]]:
    """(name, bytes) of every image in the request: multipart files (any field name), or the raw body."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        return await _read_form(request, cfg)
    body = await request.body()
    if not body:
        raise ArgumentError("empty body: send an image (raw bytes or multipart upload)")
    if body[:8].lower().startswith((b"http://", b"https:/")):
        raise ArgumentError("URLs are never fetched: send the image bytes")
    return [("image0", body)]


async def _read_form(request, cfg: ServeConfig) -> list[tuple[str, bytes]]:
    try:
        form = await request.form(max_files=cfg.max_images + 1, max_fields=cfg.max_images + 16,
                                  max_part_size=int(cfg.max_upload_mb * 2**20))
    except Exception as e:  # noqa: BLE001 - starlette's multipart errors: a malformed upload
        raise ArgumentError(f"malformed multipart upload: {getattr(e, 'detail', e)}") from None
    try:
        items = form.multi_items()
        files = [v for _, v in items if hasattr(v, "read")]
        if any(not hasattr(v, "read") and str(v).startswith(("http://", "https://")) for _, v in items):
            raise ArgumentError("URLs are never fetched: upload the image bytes")
        if len(files) > cfg.max_images:
            raise LimitError(f"more than {cfg.max_images} images in one request (--max-images)")
        if not files:
            raise ArgumentError("no image in the upload: send files in a multipart form, or the raw image bytes")
        return [(v.filename or f"image{i}", await v.read()) for i, v in enumerate(files)]
    finally:
        await form.close()


def json_response(obj, status: int = 200):
    from starlette.responses import Response

    return Response(json.dumps(obj).encode(), status_code=status, media_type="application/json")


def error_response(err: BaseException, status: int | None = None):
    from starlette.responses import Response

    return Response(error_doc(err), status_code=status or http_status(err), media_type="application/json")


class PredictEndpoint:
    """``POST /predict`` as plain ASGI, behind the Guard: the hot path, without a framework's routing, dependency
    solving and middleware stack (they were half of the event loop's CPU per request)."""

    def __init__(self, cfg: ServeConfig, svc: ModelService, pipe: Pipeline, metrics: Metrics):
        self.cfg, self.svc, self.pipe, self.metrics = cfg, svc, pipe, metrics

    async def __call__(self, scope, receive, send):
        from starlette.requests import Request

        if not self.svc.ready:
            return await respond(send, 503, error_doc(self.svc.not_ready()))
        t0 = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            out = await self.pipe.classify(await read_images(Request(scope, receive), self.cfg))
            self.metrics.images.inc(len(out))
            status, body = 200, json.dumps(out).encode()
        except Exception as e:  # noqa: BLE001 - every failure is an error document
            status, body = http_status(e), error_doc(e)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.latency.observe(time.perf_counter() - t0)
        await respond(send, status, body)


def _add_routes(app, cfg: ServeConfig, svc: ModelService, metrics: Metrics) -> None:
    from fastapi.responses import HTMLResponse, Response

    @app.get("/health")
    async def health():
        return json_response({"status": "ok"})

    @app.get("/ready")
    async def ready():
        n = ready_workers(cfg, svc)
        if svc.ready and n >= cfg.replicas:
            return json_response({"ready": True, "model": Path(cfg.model).name, "workers": n, "replicas": cfg.replicas})
        if not svc.ready:
            return error_response(svc.not_ready(), 503)
        return error_response(NotAvailable(f"{n} of {cfg.replicas} workers have loaded the model"), 503)

    @app.get("/metadata")
    async def metadata():
        return json_response(svc.metadata()) if svc.ready else error_response(svc.not_ready(), 503)

    @app.get("/metrics")
    async def prom():
        body, ctype = metrics.text()
        return Response(body, media_type=ctype)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))


def _add_error_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return error_response(ArgumentError(f"{request.method} {request.url.path}: {exc.detail}"), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        return error_response(ArgumentError("invalid request"), 400)

    @app.exception_handler(Exception)
    async def internal(request, exc):
        return error_response(exc, 500)


def build_app(cfg: ServeConfig, load_async: bool = True):
    """The ASGI app. ``load_async``: load the model in a thread so /health answers while it loads."""
    require_serving()
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    from yolo_export.threads import available_cpus

    svc, metrics = ModelService(cfg), Metrics(cfg.shared_dir)
    batcher = Batcher(svc.run, cfg.max_batch, cfg.batch_wait_ms, on_batch=metrics.batch.observe)
    pipe = Pipeline(svc, batcher, cfg.prep_workers or min(4, available_cpus()), on_stages=metrics.stages)

    def load():
        svc.load()
        mark_ready(cfg, svc)

    @asynccontextmanager
    async def lifespan(app):
        if load_async:
            threading.Thread(target=load, name="yexport-load", daemon=True).start()
        else:
            load()
        yield
        pipe.close()
        metrics.close()

    app = FastAPI(title="yexport serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = svc
    _add_error_handlers(app)
    _add_routes(app, cfg, svc, metrics)
    return Guard(app, cfg, metrics, predict=PredictEndpoint(cfg, svc, pipe, metrics))


KNOWN_PATHS = ("/", "/health", "/ready", "/metadata", "/metrics", "/predict")


def app_from_env():
    """uvicorn factory for ``--replicas N`` on one machine: each worker process builds the app from the config
    the parent put in the environment."""
    return build_app(ServeConfig.from_env())


def check_port(host: str, port: int) -> None:
    """One line (not uvicorn's log and exit) when the address cannot be listened on."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise NotAvailable(f"cannot listen on {host}:{port}: {(e.strerror or str(e)).lower()}") from None


def http_protocol(cfg: ServeConfig):
    """uvicorn's HTTP/1.1 protocol with staged close, a header budget and a write-stall limit (``serve_http``); a
    ``partial`` of a module-level class, so that ``--replicas`` workers receive it too."""
    from functools import partial

    from yolo_export.serve_http import ServeHTTP

    return partial(ServeHTTP, timeout=cfg.body_timeout_s, error_doc=error_doc)


def serve(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
          log_level: str = "warning") -> None:
    """Run the app on uvicorn until SIGINT/SIGTERM (in-flight requests finish first)."""
    require_serving()
    import signal

    import uvicorn

    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler found at start: a no-op one
    # here, so a clean shutdown exits 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    kw = {"host": host, "port": port, "log_level": log_level, "access_log": False, "timeout_graceful_shutdown": 30,
          "ws": "none", "http": http_protocol(cfg)}
    if replicas <= 1:
        uvicorn.run(build_app(cfg), **kw)
        return
    import shutil
    import tempfile

    shared = tempfile.mkdtemp(prefix="yexport-serve-")
    try:
        cfg.replicas, cfg.shared_dir = replicas, shared
        os.environ[CONFIG_ENV] = cfg.to_env()
        os.environ[MULTIPROC_ENV] = shared  # read by prometheus_client when each worker imports it
        uvicorn.run("yolo_export.serving:app_from_env", factory=True, workers=replicas, **kw)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
