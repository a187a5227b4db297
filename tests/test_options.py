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


def _applying_options():
    """(format, option, a precision the format exports that the option does not apply to) for every declared
    option with ``applies``, common or the format's own."""
    for b in registry.all_backends():
        for o in b.declared_options().values():
            for prec in b.precisions:
                if o.applies and prec not in o.applies and (o.precision is None):
                    yield b, o, prec


def _value(o):
    return True if o.type is bool else o.choices[-1] if o.choices else o.type(o.range[0]) if o.range else "x"


def test_every_declared_applies_is_enforced():
    """`applies` is a rule, not a note: an option given in an export of a precision it does not apply to is one
    ArgumentError naming the fix, checked before any work (the registry's one check, for the CLI and the API)."""
    cases = list(_applying_options())
    assert {o.name for _, o, _ in cases} >= {"calib", "calib_images", "fraction", "optimize"}
    for b, o, prec in cases:
        given = {"half": prec == "fp16", "int8": prec == "int8", o.name: _value(o)}
        if b.name in ("engine", "torchscript"):   # a GPU format; fp16 TorchScript needs CUDA
            given["device"] = "0"
        with pytest.raises(ArgumentError) as e:
            b.resolve_args(given)
        msg = str(e.value)
        assert msg.startswith(f"{o.flag} only applies ") and f"drop {o.flag}" in msg and "\n" not in msg, (b, msg)


@pytest.mark.parametrize("fmt", ["mnn", "coreml"])
def test_calibration_options_refused_where_int8_quantises_weights_only(fmt):
    b = registry.get(fmt)
    assert not b.calibrates
    for name, value in [("calib", "synthetic"), ("fraction", 0.5)]:
        with pytest.raises(ArgumentError, match=f"{fmt} --int8 quantises the weights only .*drop --{name}"):
            b.resolve_args({"int8": True, name: value})
    b.resolve_args({"int8": True, "data": "digits"})   # --data still serves the parity check


@pytest.mark.parametrize("flags, match", [
    (["-f", "onnx", "--calib-images", "50"], "--calib-images only applies with --int8: add --int8"),
    (["-f", "openvino", "--half", "--calib-images", "8"], "--calib-images only applies with --int8"),
    (["-f", "onnx", "--fraction", "0.5"], "--fraction only applies with --int8"),
    (["-f", "tflite", "--calib", "data"], "--calib only applies with --int8"),
    (["-f", "mnn", "--int8", "--calib", "synthetic"], "mnn --int8 quantises the weights only"),
    (["-f", "onnx", "--int8", "--calib", "synthetic", "--fraction", "0.5"], "drop --fraction"),
])
def test_options_that_do_not_apply_are_one_line_for_cli_and_api(cli, pt_copy, flags, match):
    (pt_copy.parent / "tiny.onnx").write_bytes(b"kept")
    code, out, err = cli(pt_copy, *flags, "--json")
    assert code == 2 and match in err and err.count("\n") == 1, err
    assert json.loads(out)["type"] == "ArgumentError"
    fmt, kw = flags[1], {}
    rest = flags[2:]
    while rest:
        key = rest.pop(0)[2:].replace("-", "_")
        kw[key] = True if not rest or rest[0].startswith("--") else rest.pop(0)
    with pytest.raises(ArgumentError, match=match):
        YOLO(pt_copy).export(fmt, **kw)
    assert sorted(p.name for p in pt_copy.parent.iterdir()) == ["tiny.onnx", "tiny.pt"]
    assert (pt_copy.parent / "tiny.onnx").read_bytes() == b"kept"


def test_edgetpu_takes_calibration_options_without_int8():
    """The Edge TPU is int8 by itself: its calibration options apply without --int8."""
    args = registry.get("edgetpu").resolve_args({"calib_images": 8, "calib": "synthetic"})
    assert args["int8"] is True and args["calib_images"] == 8


@pytest.mark.parametrize("data", ["digits", None])
def test_benchmark_passes_only_options_that_apply(tmp_path, data):
    """`yexport benchmark` exports every format x precision: each row's arguments are ones that format takes at
    that precision (a row this machine cannot make says why; never because of the matrix's own arguments)."""
    from yolo_export.engine.benchmark import export_kwargs

    m = types.SimpleNamespace(imgsz=32, device="cpu", threads=1, data=data, batch=4, art_dir=tmp_path)
    for b in registry.all_backends():
        for prec in b.precisions:
            kw, why = export_kwargs(b, prec, m)
            if kw is None:
                assert "only applies" not in why and "does not take" not in why and "drop --" not in why, (b, why)
                continue
            declared = b.declared_options()
            for k, v in kw.items():
                if v is not None and v is not False and declared[k].applies:
                    assert prec in declared[k].applies or (b.name == "edgetpu"), (b.name, prec, k)


def test_missing_packages_are_named_as_users_install_them(monkeypatch):
    """Where an extra is absent, `yexport formats` and the export's error name the packages a user installs (from
    the pyproject's extras, or the README's --no-deps TensorFlow step), never an internal import name (`_tools`)."""
    import importlib.util
    import re
    import tomllib

    from yolo_export.errors import MissingDependency

    def norm(req):
        return re.split(r"[<>=!~;\[ ]", req.strip("\"'"), maxsplit=1)[0].lower().replace("_", "-")

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installable = {norm(r) for reqs in extras.values() for r in reqs}
    installable |= {norm(w) for w in (ROOT / ".ci" / "install_tf.sh").read_text().split() if "==" in w}
    blocked = {m.split(".")[0] for b in registry.all_backends() for m in b.requires} - {"torch"}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name.split(".")[0] in blocked else real(name, *a, **k))
    checked = 0
    for b in registry.all_backends():
        if not b.missing():
            continue
        ok, why = b.is_available()
        found = re.search(r"\(missing ([^;)]*)", why)
        if found is None:          # a format whose first need is not a package (TensorRT: an NVIDIA GPU)
            continue
        named = [n.strip() for n in found.group(1).split(",")]
        assert not ok and all(norm(n) in installable for n in named), (b.name, why)
        assert len(named) == len(set(named)) and not any(n.startswith("_") for n in named), (b.name, why)
        with pytest.raises(MissingDependency) as e:
            b.require_export()
        assert found.group(0) in str(e.value) and f'pip install "yolo-export[{b.extra}]"' in str(e.value)
        checked += 1
    assert checked >= 10
    assert registry.get("mnn").is_available()[1] == "needs the 'mnn' extra (missing MNN, onnx, onnxruntime)"


@pytest.mark.parametrize("kw, match", [
    ({"simplify": "false"}, "--simplify is on or off: True or False, not 'false'"),
    ({"half": "yes"}, "--half is on or off"),
    ({"force": "no"}, "--force is on or off"),
    ({"halff": True}, r"does not take --halff .*; did you mean --half\?"),
    ({"img_size": 64}, r"; did you mean --imgsz\?"),
    ({"int8": True, "calib_image": 8}, r"; did you mean --calib-images\?"),
])
def test_python_api_flags_are_checked_like_the_cli(pt_copy, kw, match):
    """YOLO.export(simplify="false") is refused (a non-empty string would have meant on), and a mistyped keyword
    is named with the one it is near."""
    with pytest.raises(ArgumentError, match=match):
        YOLO(pt_copy).export("onnx", **kw)
    assert sorted(p.name for p in pt_copy.parent.iterdir()) == ["tiny.pt"]
    args = registry.get("onnx").resolve_args({"simplify": 0, "dynamic": 1, "verify": False})
    assert args["simplify"] is False and args["dynamic"] is True and args["verify"] is False
