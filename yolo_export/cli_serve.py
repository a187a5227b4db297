"""``yexport serve MODEL``: any artefact behind HTTP, on one machine (uvicorn) or as Ray Serve replicas (--ray)."""

from __future__ import annotations

import os
import sys

import click

from yolo_export.cli_common import RAY_LOCAL, _json_opt, _ray_opt, _threads_opt, _verbose_opt, emit_json, run_command


@click.command("serve")
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: every one).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, 0, cuda:0.")
@click.option("--replicas", type=int, default=1, show_default=True,
              help="Model replicas: worker processes on this machine, or Ray Serve replicas with --ray.")
@click.option("--max-batch", type=int, default=8, show_default=True,
              help="Largest batch the dynamic batcher forms across concurrent requests (1: no batching).")
@click.option("--batch-wait-ms", type=float, default=0.0, show_default=True,
              help="How long the runtime waits for more images after the first when none are queued (0: it takes "
                   "what queued while it was busy, so batches form under load and cost no latency when idle).")
@click.option("--max-upload-mb", type=float, default=20.0, show_default=True, help="Largest request body.")
@click.option("--max-images", type=int, default=16, show_default=True, help="Most images in one request.")
@click.option("--max-pixels", type=int, default=40_000_000, show_default=True,
              help="Largest image (width x height, read from the header before decoding).")
@click.option("--max-concurrency", type=int, default=64, show_default=True,
              help="POST requests served at once; more get 503 before their body is read (memory for bodies stays "
                   "under this x --max-upload-mb).")
@click.option("--body-timeout", type=float, default=30.0, show_default=True,
              help="Seconds a request's head or POST body may take to arrive, and a client to take its answer; a "
                   "slower client gets 408 (or, not reading, loses the connection) and frees its slot.")
@click.option("--fast-preprocess", is_flag=True,
              help="Draft JPEG decode + one-pass resize (as predict --fast-preprocess): faster, a few /255 off.")
@_ray_opt
@_threads_opt
@_json_opt
@_verbose_opt
def serve_cmd(model, host, port, device, replicas, max_batch, batch_wait_ms, max_upload_mb, max_images,
              max_pixels, max_concurrency, body_timeout, fast_preprocess, ray_address, threads, as_json, verbose):
    """Serve MODEL (any artefact this machine runs) over HTTP.

    \b
      POST /predict   image bytes or a multipart upload -> the JSON of `yexport predict --json`
      GET  /health    liveness          GET /ready     200 once the model is loaded
      GET  /metadata  names, imgsz, format, parity     GET /metrics   Prometheus text
      GET  /          a page: drop an image, see the top-5
    \b
      curl -s --data-binary @cat.jpg http://127.0.0.1:8000/predict

    \b
    With --json: one JSON document on stdout when the server listens ({"url", "model", "replicas", ...}), or the
    error document {"error", "type"} if it cannot start; logs stay on stderr.
    """
    opts = {"model": model, "host": host, "port": port, "device": device, "replicas": replicas, "threads": threads,
            "max_batch": max_batch, "batch_wait_ms": batch_wait_ms, "max_upload_mb": max_upload_mb,
            "max_images": max_images, "max_pixels": max_pixels, "max_concurrency": max_concurrency,
            "body_timeout": body_timeout, "fast_preprocess": fast_preprocess, "ray_address": ray_address}
    run_command(lambda: _serve(opts, as_json, verbose), verbose, as_json)


def _config(o: dict):
    from pathlib import Path

    from yolo_export.errors import ArgumentError
    from yolo_export.serving import ServeConfig, require_serving
    from yolo_export.threads import resolve

    import math

    require_serving()
    if min(o["replicas"], o["max_batch"], o["max_images"], o["max_pixels"], o["max_concurrency"]) < 1 \
            or not 0 < o["max_upload_mb"] < math.inf:   # NaN fails too
        raise ArgumentError("--replicas, --max-batch, --max-images, --max-pixels, --max-concurrency and "
                            "--max-upload-mb must be > 0 (and finite)")
    if not 0 < o["body_timeout"] <= 3600:
        raise ArgumentError(f"--body-timeout must be between 0 and 3600 seconds; got {o['body_timeout']}")
    if not 0 <= o["batch_wait_ms"] <= 60_000:
        raise ArgumentError(f"--batch-wait-ms must be between 0 and 60000; got {o['batch_wait_ms']}")
    if not 0 <= o["port"] <= 65535:
        raise ArgumentError(f"--port must be between 0 and 65535; got {o['port']}")
    resolve(o["threads"])  # a bad --threads is one line here, not a model that fails to load
    m = o["model"]
    return ServeConfig(model=str(Path(m).resolve()) if Path(m).exists() else m, device=o["device"],
                       threads=o["threads"], max_batch=o["max_batch"], batch_wait_ms=o["batch_wait_ms"],
                       max_upload_mb=o["max_upload_mb"], max_images=o["max_images"], max_pixels=o["max_pixels"],
                       max_concurrency=o["max_concurrency"], body_timeout_s=o["body_timeout"],
                       fast_preprocess=o["fast_preprocess"])


def _serve(o: dict, as_json: bool, verbose: bool):
    cfg = _config(o)
    host, port, replicas, ray_address = o["host"], o["port"], o["replicas"], o["ray_address"]
    where = f"http://{host}:{port}"
    doc = {"url": where, "model": o["model"], "replicas": replicas, "ray": ray_address is not None,
           "max_batch": cfg.max_batch, "max_concurrency": cfg.max_concurrency, "pid": os.getpid()}

    def started(line: str):
        emit_json(doc) if as_json else click.echo(line, err=True)
        sys.stdout.flush()

    if ray_address is not None:
        from yolo_export.distributed import serve_on_ray

        return serve_on_ray(cfg, None if ray_address == RAY_LOCAL else ray_address, host, port, replicas,
                            on_started=lambda: started(f"serving {o['model']} on Ray ({replicas} replica(s)) at "
                                                       f"{where}"))
    from yolo_export.serving import check_port, serve

    check_port(host, port)
    started(f"serving {o['model']} at {where} (Ctrl-C or SIGTERM stops; in-flight requests finish)")
    serve(cfg, host=host, port=port, replicas=replicas, log_level="info" if verbose else "warning")


def register(group) -> None:
    group.add_command(serve_cmd)
