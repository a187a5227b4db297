"""Export options as data: every backend declares its options on its class; the CLI flags, defaults, range checks,
"does not take" messages, `yexport formats` and the metadata's ``args`` come from those declarations."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from yolo_export import YOLO, options, registry
from yolo_export.errors import ArgumentError

ROOT = Path(__file__).resolve().parents[1]


def test_every_option_is_declared_with_type_help_and_one_meaning():
    seen = {}
    for b in registry.all_backends():
        assert b.args == frozenset(o.name for o in b.options), b
        for o in (*options.COMMON_OPTIONS, *b.options):
            assert isinstance(o, options.Option) and o.type in (bool, int, float, str), (b.name, o)
            assert o.help.strip() and o.flag == "--" + o.name.replace("_", "-"), (b.name, o)
            assert o.default is None or isinstance(o.default, o.type), (b.name, o)
            if o.range:
                lo, hi, what = o.range
                assert lo <= hi and what and o.check(lo) == lo and o.check(hi) == hi, o
            # one flag, one meaning: the same name means the same type and default in every format
            assert (o.type, o.default) == seen.setdefault(o.name, (o.type, o.default)), (b.name, o)
        # precisions: what the format exports, its own first, each selected by a declared option
        assert b.precisions and set(b.precisions) <= {"fp32", "fp16", "int8"}, b
        flags = {o.precision for o in b.options if o.precision}
        assert set(b.precisions) - {"fp32"} <= flags, b
    assert not set(registry.export_options()) & {"keras", "nms"}  # nothing takes them


def test_builtins_are_the_modules_of_the_backends_package():
    files = sorted(p.stem for p in (ROOT / "backends").glob("*.py") if not p.stem.startswith("_"))
    assert registry.builtin_modules() == files
    modules = {type(b).__module__.rsplit(".", 1)[-1] for b in registry.all_backends()
               if type(b).__module__.startswith("yolo_export.backends.")}
    assert modules == set(files)  # each module registers at least one format
    assert [b.name for b in registry.all_backends()][:3] == ["pytorch", "torchscript", "onnx"]  # declared order


def test_builtins_load_without_plugins():
    code = ("import os; os.environ['YOLO_EXPORT_NO_PLUGINS'] = '1'\n"
            "from yolo_export import registry; print(len(registry.names()), len(registry.builtin_modules()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    n_formats, n_modules = map(int, out.stdout.split())
    assert n_formats >= n_modules >= 12, out.stderr


def test_old_style_args_map_to_declared_options():
    class Old(registry.Backend):
        name, suffix, args = "old", ".old", frozenset({"half", "dynamic"})

    assert Old.options == (registry.DYNAMIC, registry.HALF) and Old.precisions == ("fp32", "fp16")
    with pytest.raises(TypeError, match="no declared Option"):
        type("Bad", (registry.Backend,), {"name": "bad", "args": frozenset({"no_such_option"})})
    with pytest.raises(TypeError, match="'sufix' is not a Backend declaration"):  # a typo is caught
        types.new_class("Typo", (registry.Backend,), {"sufix": ".x"})


def test_export_flags_and_help_come_from_the_declarations(cli, pt_copy):
    code, out, _ = cli(pt_copy, "--help")
    assert code == 0
    for o, _ in registry.export_options().values():
        assert o.flag in out, o
    assert "--opset" in out and "[onnx]" in out and "[engine]" in out  # the formats that take it
    assert "--no-simplify" in out and "--no-verify" in out


def test_metadata_args_are_the_recorded_options():
    args = registry.get("onnx").resolve_args({"opset": 13, "data": "digits", "threads": 1})
    rec = registry.recorded_args(args)
    assert rec["opset"] == 13 and rec["simplify"] is True and "data" not in rec and "threads" not in rec
    assert set(rec) == {"imgsz", "batch", "calib", "half", "int8", "dynamic", "simplify", "opset"}


def test_does_not_take_names_what_it_takes():
    with pytest.raises(ArgumentError, match=r"format 'tflite' does not take --workspace \(it takes --calib-images, "
                                            r"--half, --int8, plus --imgsz --batch --device\)"):
        registry.get("tflite").resolve_args({"workspace": 2})
    registry.get("tflite").resolve_args({"workspace": None, "dynamic": False})  # unset / default: not an error


@pytest.mark.parametrize("flags, match", [
    (["--batch", "0"], "--batch must be a positive integer up to 1024"),
    (["--batch", "5000"], "--batch must be a positive integer up to 1024"),
    (["--imgsz", "8"], "--imgsz must be between 32 and 4096"),
    (["--threads", "2000"], "--threads must be between 0 and 1024"),
])
def test_ranges_apply_to_predict_and_val(cli, pt_copy, images, flags, match):
    for cmd in (["predict", "--model", pt_copy, "--source", images], ["val", "--model", pt_copy, "--data", images]):
        code, out, err = cli(*cmd, *flags)
        assert code == 2 and match in err and err.count("\n") == 1, (cmd, err)
        code, out, err = cli(*cmd, *flags, "--json")
        assert code == 2 and match in json.loads(out)["error"] and json.loads(out)["type"] == "ArgumentError"


def test_ranges_apply_to_the_python_api(pt_copy, images):
    y = YOLO(pt_copy)
    for kw, match in [({"batch": 0}, "--batch"), ({"imgsz": 8}, "--imgsz"), ({"threads": -1}, "--threads")]:
        with pytest.raises(ArgumentError, match=match):
            y.predict(images, **kw)
        with pytest.raises(ArgumentError, match=match):
            y.val(data=str(images), **kw)


def test_threads_zero_is_the_default_everywhere(cli, pt_copy, images, monkeypatch):
    from yolo_export import threads

    monkeypatch.setenv(threads.ENV, "0")
    assert threads.resolve(0) == threads.resolve(None) == threads.default_threads() or threads.spinning_pools()
    code, out, err = cli("predict", "--model", pt_copy, "--source", images, "--threads", "0", "--json")
    assert code == 0, err
    monkeypatch.setenv(threads.ENV, "-3")
    with pytest.raises(ArgumentError, match="from 1 to 1024, or 0 for the default"):
        threads.resolve(None)


def test_help_stays_light():
    """`yexport MODEL --help` lists the formats' options without importing torch or any backend library."""
    code = ("import sys; from yolo_export.cli import main\n"
            "try:\n    main(['model.pt', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'tensorflow', 'openvino', 'PIL')\n"
            "         if m in sys.modules]\n"
            "assert not heavy, heavy\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "YOLO_EXPORT_NO_PLUGINS": "1"})
    assert out.returncode == 0, out.stderr
    assert "--calib-images" in out.stdout and out.stdout.strip().endswith("ok")


def test_a_clashing_option_is_named():
    """One flag, one meaning: an option that reuses a registered name with another type or default is a clash (a
    plugin declaring one is refused with a warning at load)."""
    class Clash(registry.Backend, name="clash", suffix=".clash",
                options=(options.Option("opset", str, "x", "Not an ONNX opset."), registry.HALF)):
        pass

    clash = registry.option_conflicts(Clash())
    assert len(clash) == 1 and clash[0].startswith("--opset (str, default 'x') is already declared as int")
    assert registry.option_conflicts(registry.get("mnn")) == []
