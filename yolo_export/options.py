"""Export options as data: the one declaration from which the CLI's export flags and their help, the defaults, the
range checks (export, predict and val alike), the "does not take" messages, ``yexport formats`` and the metadata's
``args`` are generated. The options every format takes are declared here; a format declares its own in its backend
file (``options=`` on its class). Light on purpose: the CLI imports it at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yolo_export.errors import ArgumentError


@dataclass(frozen=True)
class Option:
    """One export option, as data. The CLI flag and its help, the defaults, the range check (on export, predict and
    val alike), the "does not take" message, ``yexport formats`` and the metadata's ``args`` are generated from these.

    ``type``: bool (an on/off flag; ``--x/--no-x`` when it defaults to on), int, float or str. ``range``: (low, high,
    what the number is), checked before any work. ``choices``: the values a str takes. ``precision``: the precision
    the flag selects (``fp16`` for --half, ``int8`` for --int8). ``applies``: the precisions it matters for
    (--calib-images: int8; empty: all). ``recorded``: kept in the artefact's metadata ``args``.
    """

    name: str
    type: type = bool
    default: Any = None
    help: str = ""
    range: tuple | None = None
    choices: tuple = ()
    precision: str | None = None
    applies: tuple[str, ...] = ()
    recorded: bool = False
    short: str | None = None      # a one-letter alias for the CLI (``-o``)

    def __post_init__(self):
        """A declaration the CLI can turn into a flag: a lower-case identifier, one of the four types, a one-letter
        short flag (a plugin's malformed declaration fails at its import: a warning, not a broken CLI)."""
        import re

        if not isinstance(self.name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", self.name):
            raise ValueError(f"option name {self.name!r} is not a lower-case identifier (a-z, 0-9, _)")
        if self.type not in (bool, int, float, str):
            raise ValueError(f"option {self.name!r}: type {self.type!r} is not bool, int, float or str")
        if self.short is not None and not (isinstance(self.short, str) and re.fullmatch(r"-[a-zA-Z]", self.short)):
            raise ValueError(f"option {self.name!r}: short flag {self.short!r} is not '-' and one letter")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value):
        """``value`` as this option's type, inside its range and choices, else one ArgumentError line."""
        if self.type is bool:   # YOLO.export(simplify="false") must not mean on
            if isinstance(value, bool) or type(value).__name__ == "bool_" or (isinstance(value, int)
                                                                             and value in (0, 1)):
                return bool(value)
            raise ArgumentError(f"{self.flag} is on or off: True or False, not {value!r}")
        if self.choices:
            if value not in self.choices:
                raise ArgumentError(f"{self.flag} takes {' or '.join(repr(c) for c in self.choices)}, not {value!r}")
            return value
        if self.range is None:
            return value
        lo, hi, what = self.range
        typ = self.type
        try:
            if isinstance(value, bool) or (typ is int and isinstance(value, float) and not value.is_integer()):
                raise ValueError
            v = typ(value)
        except (TypeError, ValueError):
            raise ArgumentError(f"{self.flag} takes {'an integer' if typ is int else 'a number'} ({what}), "
                                f"not {value!r}") from None
        if not lo <= v <= hi and typ is int and lo == 1:
            raise ArgumentError(f"{self.flag} must be a positive integer up to {hi} ({what}); got {value}")
        if not lo <= v <= hi:
            raise ArgumentError(f"{self.flag} must be between {lo:g} and {hi:g} ({what}); got {value}")
        return v


# The export command's own parameters and flags (cli.py, and click's --help / --version): no option may take them.
RESERVED_NAMES = frozenset({"model", "format", "fmt", "json", "as_json", "verbose", "help", "version"})
RESERVED_SHORTS = frozenset({"-f", "-h", "-v"})

# Options every format takes, declared once (in the order the CLI lists them).
COMMON_OPTIONS: tuple[Option, ...] = (
    Option("imgsz", int, None, "Square input size (default: the model's).",
           range=(32, 4096, "a square input size in pixels"), recorded=True),
    Option("batch", int, 1, "Batch size the artefact takes (max batch when --dynamic).",
           range=(1, 1024, "a batch size"), recorded=True),
    Option("device", str, "cpu", "cpu, 0, cuda:0."),
    Option("data", str, None, "Dataset for INT8 calibration and parity checks ('digits' or an ImageFolder root)."),
    Option("fraction", float, None, "Fraction of the dataset's train split to calibrate on.",
           range=(1e-6, 1.0, "a share of the images"), applies=("int8",)),
    Option("calib", str, None, "INT8 calibration: 'data' (the --data images, the default) or 'synthetic' (noise).",
           choices=("data", "synthetic"), applies=("int8",), recorded=True),
    Option("output", str, None, "Output file, or a folder to write into (default: beside the model).", short="-o"),
    Option("force", bool, False, "Replace an existing --output file that is not a model."),
    Option("verify", bool, True, "Check parity against PyTorch after export (default on)."),
    Option("threads", int, None, "CPU threads for the runtime; 0: the default [$YOLO_EXPORT_THREADS, else half the "
           "CPUs this process may use].", range=(0, 1024, "CPU threads; 0: the default")),
)
# Options several formats take: a backend lists the ones it takes in its ``options`` (beside its own).
HALF = Option("half", bool, False, "fp16 weights/compute.", precision="fp16", recorded=True)
INT8 = Option("int8", bool, False, "8-bit quantisation: calibrated on --data where the format takes --calib-images, "
              "else 8-bit weights.", precision="int8", recorded=True)
DYNAMIC = Option("dynamic", bool, False, "Dynamic batch dimension.", recorded=True)
CALIB_IMAGES = Option("calib_images", int, 256, "Number of INT8 calibration images.",
                      range=(1, 100_000, "a number of images"), applies=("int8",))
SHARED_OPTIONS = (HALF, INT8, DYNAMIC, CALIB_IMAGES)


PRECISION_FLAGS = {o.precision: o.flag for o in SHARED_OPTIONS if o.precision}   # {"fp16": "--half", ...}


def applies_with(o: Option) -> str | None:
    """When option ``o`` applies, in a user's words: the flag(s) selecting its precisions (``--int8``), or
    ``fp32 exports``; None when it applies to every precision."""
    if not o.applies:
        return None
    if all(p in PRECISION_FLAGS for p in o.applies):
        return " or ".join(PRECISION_FLAGS[p] for p in o.applies)
    return f"{'/'.join(o.applies)} exports"


def common(name: str) -> Option:
    """The declaration of a common or shared option (``imgsz``, ``batch``, ``threads``, ``half``, ...)."""
    for o in (*COMMON_OPTIONS, *SHARED_OPTIONS):
        if o.name == name:
            return o
    raise KeyError(name)


def check(**values) -> dict:
    """The one range rule for every command (export, predict, val, ...): each common option given (not None),
    checked by its declaration. Returns the checked values."""
    return {k: common(k).check(v) for k, v in values.items() if v is not None}
