"""The ``yexport`` command line: thin. Parses, calls the Python API, prints. Imports torch only inside commands.

``yexport MODEL --format FMT`` is the default command (export); the other commands are named.
With ``--json`` every command prints exactly one JSON document on stdout; logs and progress go to stderr.
"""

from __future__ import annotations

import json
import sys
import time

import click

from yolo_export.cli_common import (
    RAY_LOCAL, _json_opt, _names_opt, _verbose_opt, common_opt, emit_json, fail, inference_opts, open_model,
    option_spec, run_command, usage)


class DefaultGroup(click.Group):
    """A group that runs ``export`` when the first argument is not a command name."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            self._not_a_typo(ctx, args[0], args[1:])
            args = ["export", *args]
        return super().parse_args(ctx, args)

    def _not_a_typo(self, ctx, word: str, rest: list) -> None:
        """A first word that is no file, has no suffix or folder, and is near a command name (``predcit``) or comes
        with another command's flags (``--model``, ``--source``) is a mistyped command, not a model for export; one
        given a --format, or the stem of a file here (``best`` for ``best.pt``), is a model (export names it)."""
        import difflib
        import glob
        import os

        if any(c in word for c in "./\\" + os.sep) or os.path.exists(word) or glob.glob(glob.escape(word) + ".*"):
            return
        if any(a in ("-f", "--format") or a.startswith(("--format=", "-f")) for a in rest):
            return
        near = difflib.get_close_matches(word, list(self.commands), n=1, cutoff=0.6)
        if near:
            raise click.UsageError(f"no command '{word}'; did you mean 'yexport {near[0]}'?", ctx)
        if any(a in ("--model", "-m", "--source") or a.startswith(("--model=", "--source=")) for a in rest):
            raise click.UsageError(f"no command '{word}' (commands: {', '.join(sorted(self.commands))})", ctx)

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


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="yolo-export", prog_name="yexport")
def main():
    """Export, run, train and benchmark YOLOv8 image classifiers.

    \b
      yexport MODEL --format FMT [options]      export (the default command)
      yexport MODEL --help                      the export options (per format: yexport formats)
      yexport predict --model M --source S      classify images with any format
      yexport info MODEL                        parameters, GFLOPs, metadata
      yexport formats                           every format and whether it runs here
    """


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

    def parse_args(self, ctx, args):
        """click's usage errors, with the fix where the mistake is a common one (see ``export_usage_hint``)."""
        given = list(args)   # click consumes ``args``
        try:
            return super().parse_args(ctx, args)
        except click.BadOptionUsage as e:
            hint = export_usage_hint(e, given)
            raise click.UsageError(hint or e.format_message(), ctx) from None
        except click.UsageError as e:
            hint = export_usage_hint(e, given)
            if hint is None:
                raise
            raise click.UsageError(hint, ctx) from None


def export_usage_hint(e: click.UsageError, args: list) -> str | None:
    """The line for a usage mistake of ``yexport MODEL`` that names the fix: a format given as a word (``yexport
    m.pt onnx``), a value given to an on/off flag (``--simplify false``, ``--half=true``), a second model; None for
    the others (click's own line then)."""
    import re

    from yolo_export import registry
    from yolo_export.errors import YoloExportError

    flag = getattr(e, "option_name", None)
    found = re.search(r"unexpected extra arguments? \((.*)\)", e.format_message())
    word = found.group(1).split()[0] if found else None
    if word is not None and word in args and args.index(word) > 0 and args[args.index(word) - 1].startswith("--"):
        prev = args[args.index(word) - 1]
        if word.lower() in ("true", "false", "yes", "no", "on", "off", "0", "1"):
            flag = prev
    if flag is not None:
        name = flag.split("=")[0]
        opts = registry.export_options()
        o = opts.get(name[2:].replace("-", "_"), (None,))[0] or opts.get(name[5:].replace("-", "_"), (None,))[0]
        if o is not None and o.type is bool:
            off = f", or --no-{o.flag[2:]} to turn it off" if o.default else " (or leave it out for off)"
            return f"{o.flag} is an on/off flag and takes no value: write {o.flag}{off}"
        return None
    if word is None:
        return None
    try:
        registry.get(registry.split_precision(word)[0])
    except YoloExportError:
        return f"export takes one MODEL (got another: {word}); export each in turn" if "." in word else None
    return f"the format goes after --format: yexport {args[0]} --format {word}"


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
