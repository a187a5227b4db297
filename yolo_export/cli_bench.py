"""``yexport benchmark``: the format x precision matrix (export, parity, accuracy, latency)."""

from __future__ import annotations

import click

from yolo_export.cli_common import _json_opt, _threads_opt, _verbose_opt, common_opt, emit_json, run_command


@click.command("benchmark")
@click.option("--model", "-m", required=True, help="A .pt (or .yaml) model to export from.")
@click.option("--data", default="digits", show_default=True, help="Dataset whose val split is measured.")
@common_opt("imgsz", help="Input size (default: the model's).")
@click.option("--formats", help="Comma-separated formats (default: every registered format).")
@click.option("--precisions", help="Comma-separated from fp32,fp16,int8 (default: all each format supports).")
@click.option("--device", default="cpu", show_default=True)
@common_opt("batch", default=32, show_default=True, help="Batch size for the throughput figure.")
@click.option("--rounds", type=int, default=5, show_default=True, help="Timed rounds (median reported).")
@click.option("--max-images", type=int, default=1000, show_default=True, help="Cap on val images.")
@click.option("--floor", type=float, help="Exit non-zero when any exported format's top-1 is below this.")
@click.option("--baseline", type=click.Path(exists=True, dir_okay=False),
              help="A previous JSON result (or {'passed': [...]}): exit non-zero when a row that passed there "
                   "does not pass now.")
@click.option("--isolate/--no-isolate", default=True, show_default=True,
              help="Run each row in a child process, so that a runtime that crashes or hangs fails only its row.")
@click.option("--timeout", type=float, default=600, show_default=True,
              help="Seconds allowed per row (with --isolate).")
@click.option("--project", default="runs/benchmark", show_default=True)
@click.option("--name", help="Run name (default: model stem and time).")
@_threads_opt
@_json_opt
@_verbose_opt
def benchmark_cmd(model, data, imgsz, formats, precisions, device, batch, rounds, max_images, floor, baseline,
                  isolate, timeout, project, name, threads, as_json, verbose):
    """Export MODEL to every format (x precision) and measure size, parity, accuracy and speed."""
    import json
    import sys

    def go():
        from yolo_export.engine.benchmark import benchmark, regressions

        res = benchmark(model, data=data, imgsz=imgsz,
                        formats=[f.strip() for f in formats.split(",")] if formats else None,
                        precisions=[p.strip() for p in precisions.split(",")] if precisions else None,
                        device=device, batch=batch, rounds=rounds, floor=floor, max_images=max_images,
                        project=project, name=name, progress=not as_json, threads=threads,
                        isolate=isolate, timeout=timeout)
        res["regressions"] = regressions(res, json.loads(open(baseline).read())) if baseline else []
        return res

    res = run_command(go, verbose, as_json)
    from yolo_export.engine.benchmark import table

    below = [r for r in res["rows"] if floor is not None and r.get("top1") is not None and r["top1"] < floor]
    if as_json:
        emit_json(res)
    else:
        click.echo(table(res))
        click.echo(f"\nmachine: {res['machine']}; files: " + ", ".join(res["files"].values()))
        for line in res["regressions"]:
            click.echo(f"REGRESSION {line}", err=True)
        for r in below:
            click.echo(f"BELOW FLOOR {r['format']} {r['precision']}: top-1 {r['top1']:.3f} < {floor}", err=True)
    if res["regressions"] or below:
        sys.exit(1)


def register(group) -> None:
    group.add_command(benchmark_cmd)
