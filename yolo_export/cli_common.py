"""What every ``yexport`` command module shares: the common options, one-line errors, the JSON output, opening a
model. Imports only click (and the options' declarations) at module level. ``cli.py`` (the group and the export
command) and the command modules (``cli_train``, ``cli_zoo``, ``cli_bench``, ``cli_serve``) import from here, never
from each other, so that the group loading its command modules by name is no import cycle.
"""

from __future__ import annotations

import json
import sys

import click

from yolo_export import options


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


def option_spec(opt, formats=(), **overrides) -> tuple[list[str], dict]:
    """click's (declarations, keywords) for a declared ``options.Option``: an unset flag stays None (the format's
    default applies); ``formats``: the formats that take it, named in its help; ``overrides``: a command's own
    default, help or callback."""
    decls = [f"{opt.flag}/--no-{opt.flag[2:]}" if opt.type is bool and opt.default else opt.flag, opt.name]
    if opt.short:
        decls.insert(1, opt.short)
    kw = {"is_flag": True} if opt.type is bool and not opt.default else {} if opt.type is bool else {"type": opt.type}
    help_ = opt.help
    if options.applies_with(opt):
        help_ += f" Only with {options.applies_with(opt)}."
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
