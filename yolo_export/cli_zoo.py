"""``yexport zoo``: list the pretrained models, fetch one (verified, cached, converted), print its cached path."""

from __future__ import annotations

import click

from yolo_export.cli_common import _json_opt, _verbose_opt, emit_json, run_command


@click.group("zoo")
def zoo_group():
    """Pretrained models from weights_manifest.json: list, get (download once), path.

    \b
      yexport zoo list [--json]        name, params, imgsz, accuracy, size, source, cached?
      yexport zoo get yolov8n-cls      download once, verify, cache, convert to our safe format
      yexport zoo path yolov8n-cls     the cached checkpoint's path (never downloads)

    \b
    Environment: YOLO_EXPORT_CACHE (cache dir; else $XDG_CACHE_HOME/yolo-export), YOLO_EXPORT_OFFLINE=1,
    YOLO_EXPORT_MIRROR=<base URL of your own copies>, YOLO_EXPORT_MANIFEST=<another manifest>,
    YOLO_EXPORT_RETRIES, YOLO_EXPORT_TIMEOUT.
    """


def _fmt_params(n) -> str:
    return f"{n / 1e6:.2f}M" if n else "?"


def _fmt_size(n) -> str:
    return f"{n / 1e6:.1f} MB" if n else "unknown"


def _source(row) -> str:
    from urllib.parse import urlsplit

    host = urlsplit(row["urls"][0]).netloc or urlsplit(row["urls"][0]).scheme
    return f"{row['source_format']} ({host}{', ' + row['release'] if row.get('release') else ''})"


@zoo_group.command("list")
@_json_opt
@_verbose_opt
def list_cmd(as_json, verbose):
    """Every zoo model: architecture, parameters, input size, published accuracy, size, source, cached?"""

    def go():
        from yolo_export import zoo

        return {"manifest": str(zoo.manifest_path()), "cache": str(zoo.zoo_dir()),
                "models": zoo.list_models()}

    out = run_command(go, verbose, as_json)
    if as_json:
        emit_json(out)
        return
    rows = out["models"]
    click.echo(f"{'name':<14} {'arch':<12} {'params':>7} {'imgsz':>5} {'top-1':>6} {'top-5':>6}  {'metrics on':<17} "
               f"{'size':>9}  {'checksum':<9} {'source':<32} cached")
    for r in rows:
        m = r["metrics"]
        cached = "no"
        if r["cached"]:
            cached = "yes" if r["cached_checksum_status"] == "verified" else "yes (unverified)"
        click.echo(f"{r['name']:<14} {r['arch'] + ' ' + r['scale']:<12} {_fmt_params(r['params']):>7} "
                   f"{r['imgsz']:>5} {m['top1']:>5.1f}{m['unit']} {m['top5']:>5.1f}{m['unit']}  "
                   f"{m['dataset'] + ' ' + m['split']:<17} {_fmt_size(r['size']):>9}  {r['checksum_status']:<9} "
                   f"{_source(r):<32} {cached}")
    click.echo(f"manifest: {out['manifest']}\ncache:    {out['cache']}", err=True)


@zoo_group.command("get")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even if cached.")
@click.option("--offline", is_flag=True, default=None, help="Use the cache only (as YOLO_EXPORT_OFFLINE=1).")
@click.option("--mirror", help="Base URL of a mirror holding the files (as YOLO_EXPORT_MIRROR).")
@_json_opt
@_verbose_opt
def get_cmd(name, force, offline, mirror, as_json, verbose):
    """Download zoo model NAME once (verified, resumable), convert it to our format, and print its path."""

    def go():
        from yolo_export import zoo

        return zoo.fetch(name, force=force, offline=offline, mirror=mirror, progress=not as_json)

    rec = run_command(go, verbose, as_json)
    if as_json:
        emit_json(rec)
        return
    how = "cached" if rec["cached"] else "downloaded"
    check = ("sha256 verified" if rec["checksum_status"] == "verified"
             else "sha256 NOT verified (none pinned in the manifest)")
    click.echo(f"{rec['name']}: {rec['path']}  ({how}; {rec['source_size'] / 1e6:.1f} MB from "
               f"{rec['source_url']}; {check}; sha256 {rec['source_sha256']})")


@zoo_group.command("path")
@click.argument("name")
@_json_opt
@_verbose_opt
def path_cmd(name, as_json, verbose):
    """Print the cached checkpoint path of NAME; exit 1 if it is not cached (never downloads)."""

    def go():
        from yolo_export import zoo
        from yolo_export.errors import FileError

        rec = zoo.cached(name)
        if rec is None:
            raise FileError(f"{zoo.entry(name).name} is not cached; fetch it with: yexport zoo get {name}")
        return rec

    rec = run_command(go, verbose, as_json)
    if as_json:
        emit_json(rec)
    else:
        click.echo(rec["path"])


def register(group) -> None:
    group.add_command(zoo_group)
