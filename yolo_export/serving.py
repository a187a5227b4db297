"""``yexport serve``: any artefact behind HTTP (FastAPI on uvicorn; the same app as Ray Serve replicas).

One ASGI app, built by ``build_app(cfg)``:

- ``POST /predict`` takes one or more images (multipart upload, or the raw bytes of one image as the body; URLs are
  never fetched) and answers the same JSON as ``yexport predict --json`` (a list of ``Results.to_dict()``);
- ``GET /health`` (liveness), ``GET /ready`` (200 once the model is loaded, 503 before), ``GET /metadata``,
  ``GET /metrics`` (Prometheus text), ``GET /`` (a small page: drop an image, see the top-5);
- images are decoded and preprocessed by the project's own code (``data.transforms``) in worker threads; the
  runtime runs in one thread, fed by a small asyncio batcher that groups images of concurrent requests into one
  call (``--max-batch``, ``--batch-wait-ms``; ``--max-batch 1`` turns batching off). ``AutoBackend.run`` pads
  fixed-batch artefacts as predict does;
- every bad request is a 4xx with ``{"error": ..., "type": ...}`` and the server keeps serving. Budgets are
  checked before anything is allocated: the body size (from Content-Length, then while reading), the number of
  images, and the pixel count from the image header before decoding.

The serving libraries (fastapi, uvicorn, prometheus_client) are imported inside functions: ``yexport --help``
never imports them.
"""


import asyncio
import io
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from yolo_export.errors import ImageError, MissingDependency, YoloExportError

PAGE = Path(__file__).with_name("serve_page.html")
CONFIG_ENV = "YOLO_EXPORT_SERVE_CONFIG"


@dataclass
class ServeConfig:
    model: str
    device: str = "cpu"
    threads: int | None = None
    max_batch: int = 8
    batch_wait_ms: float = 2.0
    max_upload_mb: float = 20.0
    max_images: int = 16
    max_pixels: int = 40_000_000
    fast_preprocess: bool = False
    prep_workers: int | None = None  # decode/preprocess threads; default: predict's (one per core, at most 4)
    extra: dict = field(default_factory=dict)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "ServeConfig":
        return cls(**json.loads(os.environ[CONFIG_ENV]))


class RequestError(YoloExportError):
    """A bad request: answered with ``status`` and a one-line JSON error."""

    def __init__(self, status: int, msg: str):
        super().__init__(msg)
        self.status = status


def require_serving() -> None:
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client", "multipart")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependency("yexport serve", "serve", f"{', '.join(missing)} not installed")


# ------------------------------------------------------------------------------ the model side
class ModelService:
    """Loads the artefact once (in a background thread, so /health answers at once) and turns bytes into Results."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.backend = None
        self.pp = None
        self.error: str | None = None
        self.loaded = threading.Event()

    def load(self) -> None:
        try:
            if self.cfg.threads:
                import torch

                torch.set_num_threads(int(self.cfg.threads))
            from yolo_export import YOLO
            from yolo_export.engine.predictor import resolve_preprocess

            self.backend = YOLO(self.cfg.model, device=self.cfg.device).backend(self.cfg.device)
            self.pp = resolve_preprocess(self.backend, None, self.cfg.fast_preprocess)
            self.backend.run(np.zeros((1, 3, self.pp["crop"], self.pp["crop"]), np.float32))  # warm up
        except Exception as e:  # noqa: BLE001 - reported by /ready and /predict, one line
            self.error = str(e).splitlines()[0] if str(e) else type(e).__name__
        finally:
            self.loaded.set()

    @property
    def ready(self) -> bool:
        return self.backend is not None

    def prepare(self, data: bytes, name: str):
        """Bytes of one image -> (CHW float32, (h, w), ms). Pixel budget checked from the header, before decoding."""
        from PIL import Image

        from yolo_export.data.transforms import open_image, preprocess

        t0 = time.perf_counter()
        if not data:
            raise RequestError(400, f"{name}: empty image")
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
        except Exception:  # noqa: BLE001 - any failure to identify is "not an image"
            raise RequestError(415, f"{name}: not an image this server can read") from None
        if w * h > self.cfg.max_pixels:
            raise RequestError(413, f"{name}: {w}x{h} = {w * h} pixels is over the limit of {self.cfg.max_pixels} "
                                    "(--max-pixels)")
        try:
            im = open_image(io.BytesIO(data), draft_to=self.pp["resize"] if self.pp.get("fast") else None)  # exact
        except ImageError as e:
            raise RequestError(415, f"{name}: {str(e).split(': ', 1)[-1]}") from None
        except Exception as e:  # noqa: BLE001 - a decoder failing on hostile bytes is a bad request
            raise RequestError(415, f"{name}: cannot decode image ({type(e).__name__})") from None
        return preprocess(im, self.pp), (im.size[1], im.size[0]), (time.perf_counter() - t0) * 1e3

    def run(self, arrays: list) -> np.ndarray:
        return self.backend.run(np.stack(arrays))

    def results(self, items, probs, infer_ms):
        from yolo_export.engine.results import Results

        out = []
        for (name, _, shape, pre_ms), p in zip(items, probs):
            t = time.perf_counter()
            r = Results(p, self.backend.names, path=name, orig_shape=shape)
            r.speed = {"preprocess": pre_ms, "inference": infer_ms, "postprocess": (time.perf_counter() - t) * 1e3}
            out.append(r.to_dict())
        return out

    def metadata(self) -> dict:
        b = self.backend
        md = b.metadata
        keep = ("description", "version", "date", "imgsz", "batch", "args", "verification", "preprocess")
        out = {"model": Path(self.cfg.model).name, "format": b.format, "names": b.names, "nc": len(b.names),
               "fixed_batch": b.fixed_batch, "dynamic": b.dynamic}
        out.update({k: md[k] for k in keep if k in md})
        out["serve"] = {"max_batch": self.cfg.max_batch, "batch_wait_ms": self.cfg.batch_wait_ms,
                        "max_upload_mb": self.cfg.max_upload_mb, "max_images": self.cfg.max_images,
                        "max_pixels": self.cfg.max_pixels}
        return out


class Batcher:
    """Groups arrays from concurrent requests into one runtime call: up to ``max_batch``, waiting at most
    ``wait_ms`` after the first for more. Runtime calls run one at a time in one worker thread."""

    def __init__(self, fn, max_batch: int, wait_ms: float, on_batch=None):
        from concurrent.futures import ThreadPoolExecutor

        self.fn, self.max_batch, self.wait = fn, max(1, int(max_batch)), max(0.0, wait_ms) / 1e3
        self.on_batch = on_batch
        self.queue: asyncio.Queue | None = None
        self.task = None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="yexport-runtime")

    async def submit(self, arrays: list) -> list:
        if self.task is None:
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._loop())
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in arrays]
        for a, f in zip(arrays, futs):
            self.queue.put_nowait((a, f))
        return await asyncio.gather(*futs)

    async def _loop(self):
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            await self._run(loop, batch)

    async def _run(self, loop, batch):
        t0 = time.perf_counter()
        try:
            probs = await loop.run_in_executor(self.pool, self.fn, [a for a, _ in batch])
        except Exception as e:  # noqa: BLE001 - each waiting request gets the error
            for _, f in batch:
                if not f.done():
                    f.set_exception(e)
            return
        ms = (time.perf_counter() - t0) * 1e3 / len(batch)
        if self.on_batch:
            self.on_batch(len(batch))
        for (_, f), p in zip(batch, probs):
            if not f.done():
                f.set_result((p, ms))

    def close(self):
        if self.task is not None:
            self.task.cancel()
        self.pool.shutdown(wait=False)


# ------------------------------------------------------------------------------ the HTTP side
class Metrics:
    """Prometheus counters and histograms in a registry of this app's own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("yexport_requests", "HTTP requests by path and status", ["path", "status"], registry=r)
        self.errors = Counter("yexport_errors", "Requests answered with an error, by status", ["status"], registry=r)
        self.images = Counter("yexport_images", "Images classified", registry=r)
        self.latency = Histogram("yexport_request_latency_seconds", "POST /predict latency", registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch = Histogram("yexport_batch_size", "Images per runtime call", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64))
        self.in_flight = Gauge("yexport_in_flight", "Requests being served", registry=r)

    def text(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def error_body(status: int, msg: str) -> bytes:
    kind = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
            415: "unsupported_media_type", 503: "not_ready"}.get(status, "error")
    return json.dumps({"error": msg, "type": kind, "status": status}).encode()


class BodyLimit:
    """ASGI middleware: refuse a body over ``limit`` bytes with 413 before reading it into memory (Content-Length),
    or as soon as a streamed body passes the limit. A declared-too-large body is drained (up to 8x the limit, never
    kept) so the client can read the answer instead of seeing a reset connection."""

    def __init__(self, app, limit: int, on_refuse=None):
        self.app, self.limit, self.on_refuse = app, int(limit), on_refuse

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._drain(receive, min(int(declared), 8 * self.limit))
            return await self._refuse(send, int(declared))
        body, more = bytearray(), True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.limit:
                return await self._refuse(send, len(body))
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return await self.app(scope, replay, send)

    async def _drain(self, receive, cap):
        got = 0
        while got < cap:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            got += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                return

    async def _refuse(self, send, size):
        if self.on_refuse:
            self.on_refuse(413)
        mb = self.limit / 2**20
        body = error_body(413, f"request body of {size} bytes is over the limit of {mb:g} MB (--max-upload-mb)")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


async def read_images(request, cfg: ServeConfig) -> list[tuple[str, bytes]]:
    """(name, bytes) of every image in the request: multipart files (any field name), or the raw body."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=cfg.max_images + 1, max_fields=cfg.max_images + 16,
                                      max_part_size=int(cfg.max_upload_mb * 2**20))
        except Exception as e:  # noqa: BLE001 - starlette's multipart errors: a malformed upload
            raise RequestError(400, f"malformed multipart upload: {getattr(e, 'detail', e)}") from None
        files = [(k, v) for k, v in form.multi_items() if hasattr(v, "read")]
        if any(not hasattr(v, "read") and str(v).startswith(("http://", "https://")) for _, v in form.multi_items()):
            raise RequestError(400, "URLs are never fetched: upload the image bytes")
        if len(files) > cfg.max_images:
            raise RequestError(413, f"more than {cfg.max_images} images in one request (--max-images)")
        out = [(v.filename or f"image{i}", await v.read()) for i, (_, v) in enumerate(files)]
        await form.close()
        if not out:
            raise RequestError(400, "no image in the upload: send files in a multipart form, or the raw image bytes")
        return out
    body = await request.body()
    if not body:
        raise RequestError(400, "empty body: send an image (raw bytes or multipart upload)")
    if body[:8].lower().startswith((b"http://", b"https:/")):
        raise RequestError(400, "URLs are never fetched: send the image bytes")
    return [("image0", body)]


def build_app(cfg: ServeConfig, load_async: bool = True):
    """The ASGI app. ``load_async``: load the model in a thread so /health answers while it loads."""
    require_serving()
    from contextlib import asynccontextmanager
    from concurrent.futures import ThreadPoolExecutor

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException

    svc, metrics = ModelService(cfg), Metrics()
    prep_pool = ThreadPoolExecutor(max(1, cfg.prep_workers or min(4, os.cpu_count() or 1)),
                                   thread_name_prefix="yexport-prep")
    batcher = Batcher(svc.run, cfg.max_batch, cfg.batch_wait_ms, on_batch=metrics.batch.observe)

    @asynccontextmanager
    async def lifespan(app):
        if load_async:
            threading.Thread(target=svc.load, name="yexport-load", daemon=True).start()
        else:
            svc.load()
        yield
        batcher.close()
        prep_pool.shutdown(wait=False)

    app = FastAPI(title="yexport serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = svc

    def fail(status: int, msg: str):
        metrics.errors.labels(str(status)).inc()
        return Response(error_body(status, msg), status_code=status, media_type="application/json")

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return fail(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        return fail(400, "invalid request")

    @app.middleware("http")
    async def count(request: Request, call_next):
        resp = await call_next(request)
        metrics.requests.labels(request.url.path if request.url.path in KNOWN_PATHS else "other",
                                str(resp.status_code)).inc()
        return resp

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if svc.ready:
            return {"ready": True, "model": Path(cfg.model).name}
        return fail(503, f"model failed to load: {svc.error}" if svc.error else "model is loading")

    @app.get("/metadata")
    async def metadata():
        return JSONResponse(svc.metadata()) if svc.ready else fail(503, svc.error or "model is loading")

    @app.get("/metrics")
    async def prom():
        body, ctype = metrics.text()
        return Response(body, media_type=ctype)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.post("/predict")
    async def predict(request: Request):
        if not svc.ready:
            return fail(503, f"model failed to load: {svc.error}" if svc.error else "model is loading")
        t0 = time.perf_counter()
        metrics.in_flight.inc()
        try:
            return JSONResponse(await _predict(request))
        except RequestError as e:
            return fail(e.status, str(e))
        finally:
            metrics.in_flight.dec()
            metrics.latency.observe(time.perf_counter() - t0)

    async def _predict(request):
        imgs = await read_images(request, cfg)
        loop = asyncio.get_running_loop()
        preps = await asyncio.gather(*[loop.run_in_executor(prep_pool, svc.prepare, d, n) for n, d in imgs],
                                     return_exceptions=True)
        for p in preps:
            if isinstance(p, BaseException):
                raise p
        outs = await batcher.submit([p[0] for p in preps])
        items = [(n, None, p[1], p[2]) for (n, _), p in zip(imgs, preps)]
        metrics.images.inc(len(items))
        return [svc.results([it], [o[0]], o[1])[0] for it, o in zip(items, outs)]

    return BodyLimit(app, int(cfg.max_upload_mb * 2**20), on_refuse=lambda s: metrics.errors.labels(str(s)).inc())


KNOWN_PATHS = ("/", "/health", "/ready", "/metadata", "/metrics", "/predict")


def app_from_env():
    """uvicorn factory for ``--replicas N`` on one machine: each worker process builds the app from the config
    the parent put in the environment."""
    return build_app(ServeConfig.from_env())


def serve(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
          log_level: str = "warning") -> None:
    """Run the app on uvicorn until SIGINT/SIGTERM (in-flight requests finish first)."""
    require_serving()
    import signal

    import uvicorn

    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler found at start: a no-op one
    # here, so a clean shutdown exits 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    if replicas > 1:
        os.environ[CONFIG_ENV] = cfg.to_env()
        uvicorn.run("yolo_export.serving:app_from_env", factory=True, host=host, port=port, workers=replicas,
                    log_level=log_level, timeout_graceful_shutdown=30)
        return
    uvicorn.run(build_app(cfg), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)
