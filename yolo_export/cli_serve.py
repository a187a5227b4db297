"""``yexport serve MODEL``: any artefact behind HTTP, on one machine (uvicorn) or as Ray Serve replicas (--ray)."""

from __future__ import annotations

import click

from yolo_export.cli import RAY_LOCAL, _ray_opt, _verbose_opt, run_command


@click.command("serve")
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: every one).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, 0, cuda:0.")
@click.option("--threads", type=int, help="CPU threads of the runtime (torch; default: the runtime's own).")
@click.option("--replicas", type=int, default=1, show_default=True,
              help="Model replicas: worker processes on this machine, or Ray Serve replicas with --ray.")
@click.option("--max-batch", type=int, default=8, show_default=True,
              help="Largest batch the dynamic batcher forms across concurrent requests (1: no batching).")
@click.option("--batch-wait-ms", type=float, default=2.0, show_default=True,
              help="How long the batcher waits for more images after the first.")
@click.option("--max-upload-mb", type=float, default=20.0, show_default=True, help="Largest request body.")
@click.option("--max-images", type=int, default=16, show_default=True, help="Most images in one request.")
@click.option("--max-pixels", type=int, default=40_000_000, show_default=True,
              help="Largest image (width x height, read from the header before decoding).")
@click.option("--fast-preprocess", is_flag=True,
              help="Draft JPEG decode + one-pass resize (as predict --fast-preprocess): faster, a few /255 off.")
@_ray_opt
@_verbose_opt
def serve_cmd(model, host, port, device, threads, replicas, max_batch, batch_wait_ms, max_upload_mb, max_images,
              max_pixels, fast_preprocess, ray_address, verbose):
    """Serve MODEL (any artefact this machine runs) over HTTP.

    \b
      POST /predict   image bytes or a multipart upload -> the JSON of `yexport predict --json`
      GET  /health    liveness          GET /ready     200 once the model is loaded
      GET  /metadata  names, imgsz, format, parity     GET /metrics   Prometheus text
      GET  /          a page: drop an image, see the top-5
    \b
      curl -s --data-binary @cat.jpg http://127.0.0.1:8000/predict
    """

    def go():
        from pathlib import Path

        from yolo_export.errors import ArgumentError
        from yolo_export.serving import ServeConfig, require_serving

        require_serving()
        if replicas < 1 or max_batch < 1 or max_images < 1 or max_pixels < 1 or max_upload_mb <= 0:
            raise ArgumentError("--replicas, --max-batch, --max-images, --max-pixels and --max-upload-mb must be > 0")
        cfg = ServeConfig(model=str(Path(model).resolve()) if Path(model).exists() else model, device=device,
                          threads=threads, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                          max_upload_mb=max_upload_mb, max_images=max_images, max_pixels=max_pixels,
                          fast_preprocess=fast_preprocess)
        where = f"http://{host}:{port}"
        if ray_address is not None:
            from yolo_export.distributed import serve_on_ray

            click.echo(f"serving {model} on Ray ({replicas} replica(s)) at {where}", err=True)
            return serve_on_ray(cfg, None if ray_address == RAY_LOCAL else ray_address, host, port, replicas)
        from yolo_export.serving import serve

        click.echo(f"serving {model} at {where} (Ctrl-C or SIGTERM stops; in-flight requests finish)", err=True)
        serve(cfg, host=host, port=port, replicas=replicas, log_level="info" if verbose else "warning")

    run_command(go, verbose)


def register(group) -> None:
    group.add_command(serve_cmd)
