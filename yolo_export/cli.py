"""The ``yexport`` command line: thin. Parses, calls the Python API, prints. Imports torch only inside commands.

``yexport MODEL --format FMT`` is the default command (export); the other commands are named.
With ``--json`` every command prints exactly one JSON document on stdout; logs and progress go to stderr.
"""

from __future__ import annotations

import json
import sys
import time

import click

from yolo_export import options


class DefaultGroup(click.Group):
    """A group that runs ``export`` when the first argument is not a command name."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["export", *args]
        return super().parse_args(ctx, args)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's usage errors as one line too (``error: ...``, exit 2), and as a JSON error document with --json."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            fail(KeyboardInterrupt(), "--json" in argv)
        except click.ClickException as e:
            usage(e, argv)
        sys.exit(rv if isinstance(rv, int) else 0)


def usage(e, argv: list) -> None:
    """One line for a click usage error, naming the command's --help; JSON on stdout with --json; exit 2."""
    from yolo_export.errors import ArgumentError

    ctx = getattr(e, "ctx", None)
    cmd = ctx.command_path if ctx is not None else "yexport"
    msg = e.format_message().strip().splitlines()
    line = (msg[0] if msg else "bad usage").rstrip(".")
    fail(ArgumentError(f"{line} (see '{cmd} --help')"), "--json" in argv)


def emit_json(obj) -> None:
    from yolo_export.metadata import plain   # the one encoding rule (NumPy values, results, paths)

    click.echo(json.dumps(obj, default=plain))


def run_command(fn, verbose: bool, as_json: bool = False):
    """Call ``fn``; turn any error into one line on stderr (and, with ``--json``, one ``{"error", "type"}`` document
    on stdout, ``type`` being one of ``errors.DOCUMENTED``) and its exit code; a traceback only with --verbose."""
    from yolo_export.utils import LOGGER, set_verbosity, sigterm_as_interrupt

    level = LOGGER.level
    set_verbosity(True if verbose else (False if as_json else None))
    try:
        with sigterm_as_interrupt():
            return fn()
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - the CLI's job is to turn errors into one line
        if verbose:
            import traceback

            traceback.print_exc()
        fail(e, as_json)
    finally:
        LOGGER.setLevel(level)  # in-process callers (tests, notebooks) keep their log level


def fail(e: BaseException, as_json: bool) -> None:
    """Print ``e`` as the user sees it and exit: 2 for usage/argument errors, 130 when interrupted, else 1."""
    from yolo_export import errors

    if isinstance(e, KeyboardInterrupt):
        e = errors.Interrupted("interrupted")
    err = errors.user_error(e)
    text = str(err).strip()
    msg = text.splitlines()[0] if text else "failed"
    if as_json:
        emit_json({"error": msg, "type": type(err).__name__})
    click.echo(f"error: {msg}", err=True)
    sys.exit(2 if isinstance(err, errors.ArgumentError) else 130 if isinstance(err, errors.Interrupted) else 1)


def _verbose_opt(f):
    return click.option("--verbose", "-v", is_flag=True, help="Debug logging and tracebacks on error.")(f)


def _threads_opt(f):
    return common_opt("threads")(f)


def _names_opt(f):
    return click.option("--names", help="Class names, comma-separated, for an exported artefact that carries none "
                                        "(or to rename its classes).")(f)


def open_model(model, device=None, names: str | None = None, imgsz: int | None = None,
               threads: int | None = None):
    """YOLO(model) with the user's --names / --imgsz supplied to an artefact whose metadata lacks them."""
    from pathlib import Path

    from yolo_export import YOLO
    from yolo_export.errors import ArgumentError

    if names is None:
        if _is_artefact(model):
            return YOLO(model, device=device, imgsz=imgsz, threads=threads)
        return YOLO(model, device=device, threads=threads)
    if not _is_artefact(model):
        raise ArgumentError(f"--names applies to exported artefacts; {Path(model).name} carries its own class names")
    return YOLO(model, device=device, names=[n.strip() for n in names.split(",")], imgsz=imgsz, threads=threads)


def _is_artefact(model) -> bool:
    from pathlib import Path

    return Path(str(model)).suffix not in (".pt", ".yaml", ".yml")


def _json_opt(f):
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(f)


RAY_LOCAL = "local"  # --ray with no address: start a local Ray cluster


def _ray_opt(f):
    """``--ray`` (start a local cluster) or ``--ray ADDRESS`` (join one: auto, ray://head:10001)."""
    return click.option("--ray", "ray_address", is_flag=False, flag_value=RAY_LOCAL, default=None, metavar="[ADDRESS]",
                        help="Run on Ray: alone, start a local cluster; with ADDRESS, join that cluster.")(f)


def inference_opts(f):
    """The flags predict and val share: --fast-preprocess, --ray, --threads, --names, --json, --verbose."""
    fast = click.option("--fast-preprocess", is_flag=True, help="Draft JPEG decode + one-pass resize: ~2x faster, "
                        "a few /255 from the reference's pixels.")
    for deco in reversed((fast, _ray_opt, _threads_opt, _names_opt, _json_opt, _verbose_opt)):
        f = deco(f)
    return f


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="yolo-export", prog_name="yexport")
def main():
    """Export, run, train and benchmark YOLOv8 image classifiers.

    \b
      yexport MODEL --format FMT [options]      export (the default command)
      yexport predict --model M --source S      classify images with any format
      yexport info MODEL                        parameters, GFLOPs, metadata
      yexport formats                           every format and whether it runs here
    """


def option_spec(opt, formats=(), **overrides) -> tuple[list[str], dict]:
    """click's (declarations, keywords) for a declared ``options.Option``: an unset flag stays None (the format's
    default applies); ``formats``: the formats that take it, named in its help; ``overrides``: a command's own
    default, help or callback."""
    decls = [f"{opt.flag}/--no-{opt.flag[2:]}" if opt.type is bool and opt.default else opt.flag, opt.name]
    if opt.short:
        decls.insert(1, opt.short)
    kw = {"is_flag": True} if opt.type is bool and not opt.default else {} if opt.type is bool else {"type": opt.type}
    help_ = opt.help
    if formats:
        help_ += f" [{', '.join(formats)}]" if len(formats) <= 5 else f" [{len(formats)} formats; 'yexport formats']"
    return decls, {"default": None, "help": help_, **kw, **overrides}


def _checked(ctx, param, value):
    """A flag's value checked by its declared option (the one range rule, as export applies it); None passes."""
    if value is None:
        return None
    from yolo_export.errors import ArgumentError

    try:
        return options.common(param.name).check(value)
    except ArgumentError as e:
        raise click.UsageError(str(e), ctx) from None


def common_opt(name: str, **overrides):
    """A common export option (``--imgsz``, ``--batch``, ``--threads``) as a flag of another command (predict, val,
    ...): the same declaration, so the same help and range check, with that command's own default or help."""
    opt = options.common(name)
    decls, kw = option_spec(opt, callback=_checked if opt.range or opt.choices else None, **overrides)
    return click.option(*decls, **kw)


class ExportCommand(click.Command):
    """``yexport MODEL``: its option flags are generated from the registry (the common options, then every format's
    own) when first needed, so ``yexport --help`` imports no backend and a plugin's options become flags."""

    def get_params(self, ctx):
        from yolo_export import registry

        key = tuple(map(id, registry.all_backends()))
        if getattr(self, "_key", None) != key:
            specs = [option_spec(o, formats) for o, formats in registry.export_options().values()]
            self._generated = [click.Option(decls, **kw) for decls, kw in specs]
            self._key = key
        fixed = [p for p in self.params if p.name in ("model", "fmt")]
        rest = [p for p in self.params if p.name not in ("model", "fmt")]
        return [*fixed, *self._generated, *rest, *super().get_params(ctx)[len(self.params):]]


@main.command("export", cls=ExportCommand)
@click.argument("model")
@click.option("--format", "-f", "fmt", default="onnx", show_default=True, help="Target format (see `yexport formats`).")
@_json_opt
@_verbose_opt
def export_cmd(model, fmt, as_json, verbose, **opts):
    """Export MODEL (.pt, .yaml or a zoo name) to --format."""

    def go():
        from yolo_export import YOLO

        y = YOLO(model)
        y.export(fmt, **{k: v for k, v in opts.items() if v is not None})
        return y.last_export

    res = run_command(go, verbose, as_json)
    d = res.to_dict()
    if as_json:
        emit_json(d)
    else:
        par = d.get("parity") or {}
        if par.get("status") == "passed":
            check = (f"parity: max abs diff {par['max_abs_diff']:.2e}, top-1 agreement "
                     f"{par['top1_agreement']:.1%} on {par['n']} inputs")
        elif par.get("status") == "skipped":
            check = f"parity: not checked ({par.get('reason')})"
        else:
            check = "parity: not checked (--no-verify)"
        if d.get("calibration"):
            check += f"; calibrated on {d['calibration']}"
        click.echo(f"{d['format']} ({d['precision']}) -> {d['path']}  {d['size_mb']:.2f} MB in {d['time_s']:.1f}s; "
                   f"{check}")


@main.command("predict")
@click.option("--model", "-m", required=True, help="Any model: .pt, .yaml, zoo name, or an exported artefact.")
@click.option("--source", "-s", required=True, multiple=True, help="Image file, directory or glob (repeatable).")
@common_opt("imgsz", help="Square input size (default: the model's; an export takes only its own).")
@common_opt("batch", default=1, show_default=True, help="Images per inference call.")
@click.option("--device", default=None)
@click.option("--half", is_flag=True, help="fp16 on CUDA (PyTorch, TorchScript).")
@click.option("--output", "-o", help="Write one row per image, in input order, to results.jsonl or .parquet "
              "(a rerun skips the rows already written).")
@inference_opts
def predict_cmd(model, source, imgsz, batch, device, half, output, fast_preprocess, ray_address, threads,
                names, as_json, verbose):
    """Classify images with MODEL; the same Results for every format."""
    if output or ray_address:
        def to_file():
            from yolo_export.distributed import predict_to_file
            from yolo_export.errors import ArgumentError

            if names:
                raise ArgumentError("--names is not taken with --output/--ray; predict without them")

            return predict_to_file(model, list(source), output, ray=ray_address is not None,
                                   address=None if ray_address == RAY_LOCAL else ray_address, imgsz=imgsz,
                                   batch=batch, device=device, fast_preprocess=fast_preprocess,
                                   progress=not as_json, threads=threads)

        summary = run_command(to_file, verbose, as_json)
        emit_json(summary) if as_json else click.echo(
            f"{summary['images']} image(s) -> {summary['output']} ({summary['skipped_already_written']} already "
            f"written, {summary['errors']} unreadable) in {summary['time_s']:.1f}s", err=True)
        return

    def go():
        y = open_model(model, device, names, imgsz, threads)
        src = list(source) if len(source) > 1 else source[0]
        return y.predict(src, imgsz=imgsz, batch=batch, device=device, half=half, fast_preprocess=fast_preprocess)

    t0 = time.perf_counter()
    results = run_command(go, verbose, as_json)
    if as_json:
        emit_json([r.to_dict() for r in results])
        return
    for r in results:
        click.echo(f"{r.path}: {r.verbose()}")
    n = len(results)
    if n:
        sp = {k: sum(r.speed[k] for r in results) / n for k in results[0].speed}
        click.echo(f"{n} image(s) in {time.perf_counter() - t0:.2f}s; per image: preprocess {sp['preprocess']:.2f} ms, "
                   f"inference {sp['inference']:.2f} ms, postprocess {sp['postprocess']:.2f} ms; "
                   f"{results[0].threads} runtime thread(s)", err=True)


@main.command("info")
@click.argument("model")
@_names_opt
@common_opt("imgsz", help="Input size of an exported artefact that does not record it.")
@_json_opt
@_verbose_opt
def info_cmd(model, names, imgsz, as_json, verbose):
    """Parameters, GFLOPs, classes and metadata of MODEL."""

    def go():
        return open_model(model, names=names, imgsz=imgsz).info()

    info = run_command(go, verbose, as_json)
    if as_json:
        emit_json(info)
        return
    from yolo_export.metadata import plain

    names = info.pop("names", {})
    for k, v in info.items():
        if isinstance(v, dict):
            v = json.dumps(v, default=plain)
        click.echo(f"{k:>12}: {v}")
    shown = ", ".join(f"{i}:{n}" for i, n in list(names.items())[:10])
    click.echo(f"{'names':>12}: {shown}{' ...' if len(names) > 10 else ''}")


@main.command("formats")
@_json_opt
@_verbose_opt
def formats_cmd(as_json, verbose):
    """Every registered format, its suffix, extra, precisions, export options and whether it exports / runs here."""

    def go():
        from yolo_export import registry

        rows = []
        for b in registry.all_backends():
            ok, why = b.is_available()
            rok, rwhy = b.runtime_available() if ok else (False, why)
            rows.append({"format": b.name, "title": b.title, "suffix": b.suffix + ("/" if b.is_dir else ""),
                         "extra": b.extra or "(core)", "export": ok, "predict": rok, "precisions": list(b.precisions),
                         "args": sorted(b.args), "options": [_option_doc(o) for o in b.options],
                         "reason": why or rwhy or ""})
        return rows

    rows = run_command(go, verbose, as_json)
    if as_json:
        emit_json({"formats": rows})
        return
    click.echo(f"{'format':<12} {'suffix':<18} {'extra':<11} {'export':<7} {'predict':<8} note")
    for r in rows:
        click.echo(f"{r['format']:<12} {r['suffix']:<18} {r['extra']:<11} {'yes' if r['export'] else 'no':<7} "
                   f"{'yes' if r['predict'] else 'no':<8} {r['reason']}")
    click.echo(f"\n{'format':<12} {'precisions':<15} export options (beside the common ones: 'yexport MODEL --help')")
    for r in rows:
        click.echo(f"{r['format']:<12} {'/'.join(r['precisions']):<15} "
                   f"{' '.join(o['flag'] for o in r['options']) or '-'}")


def _option_doc(o) -> dict:
    return {"name": o.name, "flag": o.flag, "type": o.type.__name__, "default": o.default, "help": o.help,
            "range": list(o.range[:2]) if o.range else None, "choices": list(o.choices) or None,
            "precisions": list(o.applies) or None}


# Commands that live in their own modules (each imports only click at module level and exposes
# ``register(group)``). Listed here so `yexport --help` shows them without importing torch.
COMMAND_MODULES = ("yolo_export.cli_train", "yolo_export.cli_zoo", "yolo_export.cli_bench", "yolo_export.cli_serve")


def _register_command_modules() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        mod.register(main)


_register_command_modules()

if __name__ == "__main__":
    main()
