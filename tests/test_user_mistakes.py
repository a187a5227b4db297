"""The mistakes a new user makes, each answered with one line in the project's words and its documented exit code
(2: usage / argument, 1: anything else), with every file that existed before still there, byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs
from test_outputs import kept, leftovers, snapshot

from yolo_export import errors


def one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for name in ("ValueError", "AttributeError", "ZeroDivisionError", "RecursionError", "UnicodeDecodeError",
                 "SystemError", "RuntimeError", "KeyError", "TypeError"):
        assert name not in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args,words", [
    (["--imgsz", "0"], "--imgsz must be between 32 and 4096"),
    (["--imgsz", "-5"], "--imgsz must be between 32 and 4096"),
    (["--batch", "0"], "--batch must be a positive integer"),
    (["--fraction", "1.5"], "--fraction must be between"),
    (["--device", "gpu7"], "unknown device 'gpu7'"),
    (["-f", "engine", "--workspace", "-1"], "--workspace must be between"),
    (["--opset", "99"], "--opset must be between"),
    (["--int8"], "--int8 needs calibration images: pass --data"),
    (["--int8", "--calib", "synthetic", "--data", "digits"], "choose one"),
    (["--calib", "synthetic"], "--calib only applies with --int8"),
    (["-f", "tensorflow"], "'tensorflow' is a family of formats: choose one of saved_model, pb, tflite, edgetpu, tfjs"),
    (["-f", "onxx"], "did you mean 'onnx'"),
])
def test_argument_mistakes_exit_2_before_any_work(cli, pt_copy, args, words):
    before = snapshot(pt_copy.parent)
    code, out, err = cli(pt_copy, *(["-f", "onnx"] if "-f" not in args else []), *args, "--json")
    assert code == 2 and words in one_line(err), err
    assert json.loads(out)["type"] == "ArgumentError"
    assert kept(before) == [] and sorted(p.name for p in pt_copy.parent.iterdir()) == ["tiny.pt"]


def test_family_names_resolve(tiny_yolo):
    from yolo_export import registry

    assert registry.get("trt").name == "engine" and registry.get("ov").name == "openvino"
    assert registry.get("tf").name == "saved_model"
    assert registry.split_precision("tflite-int8") == ("tflite", {"int8": True})
    assert registry.split_precision("openvino_fp16") == ("openvino", {"half": True})
    assert registry.split_precision("saved_model") == ("saved_model", {})


@needs("onnx", "onnxruntime", extra="onnx")
def test_int8_with_synthetic_calibration_says_so(cli, pt_copy):
    code, out, err = cli(pt_copy, "-f", "onnx", "--int8", "--calib", "synthetic", "--calib-images", "4",
                         "--no-verify")
    assert code == 0, err
    assert "calibrated on synthetic" in out
    code, out, err = cli(pt_copy, "-f", "onnx-int8", "--data", "digits", "--calib-images", "4", "--no-verify",
                         "--json")
    doc = json.loads(out)
    assert code == 0 and doc["calibration"] == "digits" and doc["precision"] == "int8"
    assert sorted(p.name for p in pt_copy.parent.iterdir()) == ["tiny.pt", "tiny_int8.onnx"]


@needs("onnx", "onnxruntime", extra="onnx")
@pytest.mark.parametrize("key,value", [("names", "'cat'"), ("imgsz", "abc"), ("names", "{0: 'a', 1: 'b'"),
                                       ("preprocess", '{"crop": 0, "resize": 0}'), ("imgsz", "[0, 0]"),
                                       ("names", b"\xff\xfe bad utf-8")])
def test_malformed_metadata_values_are_one_line(cli, pt_copy, images, key, value):
    import onnx

    code, out, err = cli(pt_copy, "-f", "onnx", "--json", "--no-verify")
    path = Path(json.loads(out)["path"])
    m = onnx.load(str(path))
    for p in m.metadata_props:
        if p.key == key:
            if isinstance(value, bytes):  # a protobuf string field cannot hold bad UTF-8: patch the bytes
                p.value = "@@MARK@@"
            else:
                p.value = value
    bad = path.with_name("bad.onnx")
    data = m.SerializeToString()
    if isinstance(value, bytes):
        data = data.replace(b"@@MARK@@", value[:8])
    bad.write_bytes(data)
    before = snapshot(pt_copy.parent)
    for cmd in (["info", bad, "--json"], ["predict", "--model", bad, "--source", images, "--json"]):
        code, out, err = cli(*cmd)
        assert code in (1, 2), (cmd, err)
        one_line(err)
        assert json.loads(out)["type"] in errors.DOCUMENTED and json.loads(out)["type"] != "InternalError", out
    assert kept(before) == []


@needs("MNN", extra="mnn")
def test_corrupt_mnn_file_is_one_line(cli, tmp_path, images):
    bad = tmp_path / "bad.mnn"
    bad.write_bytes(b"\x00" * 64 + os.urandom(256))
    code, out, err = cli("predict", "--model", bad, "--source", images, "--json")
    assert code == 1 and "SystemError" not in err
    one_line(err)


def test_failed_download_leaves_no_lock(tmp_path):
    from yolo_export.zoo import _file_lock

    lock = tmp_path / "m.pt.lock"
    with pytest.raises(RuntimeError), _file_lock(lock):
        raise RuntimeError("download failed")
    assert not lock.exists()
    with _file_lock(lock):
        assert lock.exists()
    assert list(tmp_path.iterdir()) == []


def _val_with_workers(tiny_pt, tmp) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    code = ("from yolo_export import YOLO\n"
            f"YOLO({str(tiny_pt)!r}).val(data='digits', workers=2, batch=64, progress=False)\n")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_dataloader_workers_leave_no_temp_folders(tiny_pt):
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="yx", dir="/tmp"))  # short: workers put a Unix socket in there
    try:
        r = _val_with_workers(tiny_pt, tmp)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "main process" not in r.stderr  # the workers really ran
        assert not [p.name for p in tmp.iterdir() if p.name.startswith("pymp-")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_long_temp_path_loads_in_the_main_process_instead_of_hanging(tmp_path, tiny_pt):
    tmp = tmp_path / ("t" * 90)  # past the Unix socket path limit once multiprocessing adds its folder
    tmp.mkdir()
    r = _val_with_workers(tiny_pt, tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "too long a path" in r.stderr


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=needs("onnxruntime", extra="onnx")),
                                 pytest.param("ncnn", marks=needs("ncnn", "pnnx", extra="ncnn"))])
def test_relative_paths_as_users_type_them(fmt, cli, tiny_pt, images, tmp_path, monkeypatch):
    """Export, predict and val from a working directory with relative paths (model, --output, --data, --source)."""
    import shutil

    from test_data import make_folder

    work = tmp_path / "proj"
    (work / "models").mkdir(parents=True)
    shutil.copy(tiny_pt, work / "models" / "best.pt")
    shutil.copytree(images, work / "imgs")
    make_folder(work / "ds", n_train=2, n_val=1, size=(20, 20), classes=[f"c{i}" for i in range(10)])
    before = snapshot(work)
    monkeypatch.chdir(work)
    code, out, err = cli("models/best.pt", "-f", fmt, "-o", "exports/", "--json")
    assert code == 0, err
    path = json.loads(out)["path"]
    assert not Path(path).is_absolute() and Path(path).exists()
    code, out, err = cli("predict", "--model", path, "--source", "imgs", "--json")
    assert code == 0 and len(json.loads(out)) == 4, err
    code, out, err = cli("val", "--model", path, "--data", "ds", "--json")
    assert code == 0 and json.loads(out)["n"] == 10, err
    assert kept(before) == [] and leftovers(work) == []


def test_predict_output_gives_a_bad_image_an_error_row(cli, pt_copy, images, tmp_path):
    """--output (no Ray) keeps going past an unreadable image, as the Ray path does: that image gets an error row."""
    import shutil

    src = tmp_path / "imgs"
    shutil.copytree(images, src)
    (src / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "r.jsonl"
    code, stdout, err = cli("predict", "--model", pt_copy, "--source", src, "--output", out, "--json")
    assert code == 0, err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 5 and [r["index"] for r in rows] == list(range(5))
    bad = [r for r in rows if r["error"]]
    assert [Path(r["path"]).name for r in bad] == ["broken.jpg"] and bad[0]["top1"] is None
    assert all(r["top1"] is not None for r in rows if not r["error"])
    assert json.loads(stdout)["errors"] == 1


def test_sigterm_is_an_interrupt_and_leaves_no_staging(tmp_path):
    """SIGTERM during any command: staging removed on the way out, one line, exit 130 (as Ctrl-C)."""
    code = (
        "import os, signal, time\n"
        "from yolo_export.cli import run_command\n"
        "from yolo_export.utils import staging_dir\n"
        "def work():\n"
        f"    with staging_dir({str(tmp_path / 'out.onnx')!r}):\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(30)\n"
        "run_command(work, verbose=False)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 130, r.stderr
    assert one_line(r.stderr) == "error: interrupted"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("names,words", [("a,b,c", "gives 3 class names"), (",", "one non-empty name per class")])
def test_names_that_do_not_fit_the_model_exit_2(cli, pt_copy, images, names, words):
    code, out, err = cli(pt_copy, "-f", "torchscript", "--json")
    assert code == 0, err
    art = json.loads(out)["path"]
    code, out, err = cli("predict", "--model", art, "--source", images, "--names", names)
    assert code == 2 and words in one_line(err)


@pytest.mark.parametrize("argv,words", [
    (["predcit", "--model", "m.pt", "--source", "imgs"], "no command 'predcit'; did you mean 'yexport predict'?"),
    (["vla", "--model", "m.pt"], "did you mean 'yexport val'?"),
    (["fromats"], "did you mean 'yexport formats'?"),
    (["classify", "--model", "m.pt"], "no command 'classify' (commands: benchmark,"),
])
def test_a_mistyped_command_is_named_with_the_nearest(cli, tmp_path, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(*argv, "--json")
    assert code == 2 and words in one_line(err), err
    assert json.loads(out)["type"] == "ArgumentError"


def test_a_file_named_like_a_command_is_still_a_model(cli, pt_copy, monkeypatch):
    """The typo rule never takes an existing file (or a name with a suffix or a folder) for a command."""
    monkeypatch.chdir(pt_copy.parent)
    pt_copy.rename(pt_copy.parent / "vla")
    code, out, err = cli("vla", "-f", "torchscript")
    assert "cannot tell the format of vla" in one_line(err)   # taken as the model, not as a mistyped 'val'
    code, out, err = cli("predcit.pt", "-f", "torchscript")
    assert code == 1 and "checkpoint not found: predcit.pt" in one_line(err)


@pytest.mark.parametrize("name,content", [
    ("empty.onnx", b""), ("empty.torchscript", b""), ("empty.tflite", b""), ("empty.pte", b""),
    pytest.param("junk.onnx", os.urandom(300), marks=needs("onnx", extra="onnx")),
    pytest.param("nograph.onnx", b"\x08\x07", marks=needs("onnx", extra="onnx")),
    ("junk.torchscript", os.urandom(300)),
    pytest.param("junk.pte", b"\x00" * 4 + b"XX12" + os.urandom(300), marks=needs("executorch", extra="executorch")),
    pytest.param("junk.tflite", os.urandom(300), marks=needs("tensorflow", extra="tensorflow")),
])
def test_an_empty_or_garbage_artefact_is_a_file_error(cli, tmp_path, images, name, content):
    """Not 'supply --names/--imgsz' then a runtime's own error: one line saying the file is not a valid model."""
    bad = tmp_path / name
    bad.write_bytes(content)
    for extra in ([], ["--names", "a,b", "--imgsz", "32"]):
        code, out, err = cli("predict", "--model", bad, "--source", images, "--json", *extra)
        line = one_line(err)
        assert code == 1 and json.loads(out)["type"] == "FileError", (extra, err)
        assert "empty (0 bytes)" in line if not content else "not a" in line, line
        assert "--names" not in line


@pytest.mark.parametrize("what", ["model", "checkpoint", "image", "dataset", "yaml"])
def test_not_found_is_a_file_error(cli, pt_copy, images, tmp_path, what):
    argv = {"model": ["predict", "--model", tmp_path / "nope.onnx", "--source", images],
            "checkpoint": ["predict", "--model", tmp_path / "nope.pt", "--source", images],
            "image": ["predict", "--model", pt_copy, "--source", tmp_path / "nope.jpg"],
            "dataset": ["val", "--model", pt_copy, "--data", tmp_path / "nope"],
            "yaml": ["info", tmp_path / "nope.yaml"]}[what]
    code, out, err = cli(*argv, "--json")
    assert code == 1 and "not found" in one_line(err) and json.loads(out)["type"] == "FileError", err


def test_not_found_is_still_caught_as_its_kind():
    from yolo_export.data.sources import iter_items
    from yolo_export.nn.checkpoint import load_checkpoint

    with pytest.raises(errors.CheckpointError, match="not found") as e:
        load_checkpoint("nope.pt")
    assert type(errors.user_error(e.value)) is errors.FileError
    with pytest.raises(errors.ImageError, match="not found"):
        list(iter_items("nope.jpg"))


@needs("onnx", "onnxruntime", extra="onnx")
def test_a_size_the_export_cannot_take_is_an_argument_error(cli, pt_copy, images):
    code, out, err = cli(pt_copy, "-f", "onnx", "--no-verify", "--json")
    art = json.loads(out)["path"]
    code, out, err = cli("predict", "--model", art, "--source", images, "--imgsz", "64", "--json")
    assert code == 2 and "exported at imgsz 32" in one_line(err) and json.loads(out)["type"] == "ArgumentError"


def test_an_artefact_source_is_refused_before_a_missing_extra(cli, tmp_path, pt_copy, monkeypatch):
    """Installing the target's extra would not help: say first that export needs the .pt."""
    from yolo_export import registry

    code, out, err = cli(pt_copy, "-f", "torchscript", "--no-verify", "--json")
    art = json.loads(out)["path"]
    target = next(b for b in registry.all_backends() if b.extra)
    monkeypatch.setattr(type(target), "require_export", lambda self: (_ for _ in ()).throw(
        errors.MissingDependency(self.name, self.extra)))
    code, out, err = cli(art, "-f", target.name, "--json")
    assert code == 2 and "is a torchscript artefact already" in one_line(err), err


def test_val_names_the_split_it_scored(cli, pt_copy, tmp_path, caplog):
    """No test/ split: val falls back to val/ as the reference package does, with a warning, and says so."""
    from test_data import make_folder

    make_folder(tmp_path / "ds", n_train=1, n_val=1, size=(20, 20), classes=[f"c{i}" for i in range(10)])
    code, out, err = cli("val", "--model", pt_copy, "--data", tmp_path / "ds", "--split", "test", "--json")
    assert code == 0, err
    assert json.loads(out)["split"] == "val" and "no 'test' split; using 'val'" in caplog.text


def test_globs_and_folders_skip_hidden_files_as_the_shell_does(tmp_path, monkeypatch):
    import glob

    from yolo_export.data.sources import iter_items, safe_glob

    for rel in ("a.jpg", ".b.jpg", "sub/c.jpg", ".hid/d.jpg", "sub/._e.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    for pat in ("*.jpg", "**/*.jpg", ".*.jpg", ".hid/*.jpg", "*/*.jpg", "./*.jpg", "*/.*.jpg", ".*/*.jpg"):
        assert safe_glob(pat) == sorted(glob.glob(pat, recursive=True)), pat
    assert [i.path for i in iter_items(".")] == ["a.jpg", "sub/c.jpg"]


def test_the_export_context_names_the_final_destination(pt_copy, tmp_path, monkeypatch):
    """What a backend tells the user about its artefact (the TF.js demo's folder) names where it ends up, also when
    --output is a folder that receives it."""
    from yolo_export import YOLO, registry

    backend = registry.get("torchscript")
    seen, real = [], type(backend).export
    monkeypatch.setattr(type(backend), "export", lambda self, ctx: (seen.append(ctx.destination), real(self, ctx))[1])
    (tmp_path / "exports").mkdir()
    path = YOLO(pt_copy).export("torchscript", output=str(tmp_path / "exports"), verify=False)
    assert seen == [Path(path)] and Path(path).parent == tmp_path / "exports"


@pytest.mark.parametrize("kw,words", [
    ({"name": "bad name"}, "not a lower-case identifier"), ({"name": ""}, "not a lower-case identifier"),
    ({"name": "-x"}, "not a lower-case identifier"), ({"name": "weird", "type": list}, "is not bool, int"),
    ({"name": "evil", "short": "--e"}, "is not '-' and one letter"),
])
def test_an_option_the_cli_cannot_make_a_flag_of_fails_at_declaration(kw, words):
    """A plugin's malformed declaration fails when its module is imported (the loader's warning), not later as a
    traceback from click in every export."""
    from yolo_export.options import Option

    with pytest.raises(ValueError, match=words):
        Option(**{"type": bool, "default": False, **kw})


@pytest.mark.parametrize("opt,words", [
    (("help", bool, False), "--help is a parameter of the export command itself"),
    (("json", bool, False), "--json is a parameter of the export command itself"),
    (("fmt", str, None), "--fmt is a parameter of the export command itself"),
    (("evil", str, None, "", None, (), None, (), False, "-f"), "short flag -f is the export command's own"),
    (("evil", str, None, "", None, (), None, (), False, "-o"), "short flag -o is already --output's"),
    (("imgsz", int, None, "", (1, 10**9, "px")), "--imgsz is already declared with another range"),
    (("calib", str, None, "", None, ("data", "/etc/passwd")), "--calib is already declared with another range"),
])
def test_a_plugin_option_cannot_shadow_the_commands_own_or_weaken_a_check(opt, words):
    from yolo_export import registry
    from yolo_export.options import Option

    class Evil(registry.Backend, name="evil", suffix=".evil", options=(Option(*opt),)):
        pass

    clash = registry.option_conflicts(Evil())
    assert len(clash) == 1 and words in clash[0], clash


def test_a_zip_that_is_not_a_checkpoint_says_so(cli, tmp_path):
    import zipfile

    for entries in (["hello.txt"], ["stuff/a.txt", "stuff/b.txt"]):
        p = tmp_path / "model.pt"
        with zipfile.ZipFile(p, "w") as z:
            for e in entries:
                z.writestr(e, "hi")
        code, out, err = cli("info", p, "--json")
        assert code == 1 and "is a zip archive but not a PyTorch checkpoint" in one_line(err), err


def test_a_model_path_without_its_suffix_names_the_files_there(cli, pt_copy, images):
    code, out, err = cli("predict", "--model", pt_copy.with_suffix(""), "--source", images)
    assert code == 1 and f"(did you mean {pt_copy}?)" in one_line(err)


@pytest.mark.parametrize("name,words,code", [("keep.txt", "--output must end in", 2),
                                             ("keep.jsonl", "is not an earlier val --output", 1),
                                             ("tiny.pt", "--output must end in", 2)])
def test_val_output_is_checked_before_any_work(cli, pt_copy, tmp_path, monkeypatch, name, words, code):
    from yolo_export.engine.model import YOLO

    (tmp_path / "keep.txt").write_text("keep")
    (tmp_path / "keep.jsonl").write_text("keep")
    before = snapshot(tmp_path)
    monkeypatch.setattr(YOLO, "val", lambda *a, **k: pytest.fail("val ran before --output was checked"))
    got, out, err = cli("val", "--model", pt_copy, "--data", "digits", "--output", tmp_path / name)
    assert got == code and words in one_line(err)
    assert kept(before) == []


@needs("onnx", "onnxruntime", extra="onnx")
def test_an_artefact_without_its_extra_names_the_extra(cli, pt_copy, images, monkeypatch):
    """`yexport info model.onnx` (and predict) where the onnx extra is not installed: the extra to install, not
    'No module named onnx' as an unexpected error."""
    code, out, err = cli(pt_copy, "-f", "onnx", "--no-verify", "--json")
    path = json.loads(out)["path"]
    for mod in ("onnx", "onnxruntime"):          # as if not installed: `import onnx` fails, find_spec finds nothing
        monkeypatch.setitem(sys.modules, mod, None)
    before = snapshot(pt_copy.parent)
    for cmd in (["info", path], ["predict", "--model", path, "--source", images]):
        code, out, err = cli(*cmd, "--json")
        assert code == 1 and json.loads(out)["type"] == "MissingDependency", (cmd, err)
        line = one_line(err)
        assert 'pip install "yolo-export[onnx]"' in line and "(missing onnx" in line, line
    assert kept(before) == []


@pytest.mark.parametrize("args, words", [
    (["onnx"], "the format goes after --format: yexport {pt} --format onnx"),
    (["tflite-int8"], "the format goes after --format: yexport {pt} --format tflite-int8"),
    (["-f", "onnx", "--simplify", "false"], "--simplify is an on/off flag and takes no value: write --simplify, or "
                                            "--no-simplify to turn it off"),
    (["--half=true"], "--half is an on/off flag and takes no value: write --half"),
    (["--verify", "no"], "or --no-verify to turn it off"),
    (["other.pt"], "export takes one MODEL (got another: other.pt)"),
])
def test_export_usage_mistakes_name_the_fix(cli, pt_copy, args, words):
    before = snapshot(pt_copy.parent)
    code, out, err = cli(pt_copy, *args, "--json")
    assert code == 2 and words.format(pt=pt_copy) in one_line(err), err
    assert "export --help')" in err and json.loads(out)["type"] == "ArgumentError"
    assert kept(before) == [] and sorted(p.name for p in pt_copy.parent.iterdir()) == ["tiny.pt"]


def test_a_model_stem_is_not_taken_for_a_mistyped_command(cli, pt_copy, monkeypatch):
    """`yexport tiny -f onnx` (the model without its suffix) says which file was meant, not 'did you mean train'."""
    monkeypatch.chdir(pt_copy.parent)
    for args in (["tiny", "-f", "onnx"], ["tiny"]):
        code, out, err = cli(*args)
        assert code == 1 and "did you mean tiny.pt" in one_line(err) and "train" not in err, err
    code, out, err = cli("trian", "--data", "digits")   # a mistyped command is still one
    assert code == 2 and "did you mean 'yexport train'" in one_line(err)


def test_torchscript_optimize_where_torch_has_no_xnnpack(cli, pt_copy, images):
    """--optimize runs torch's mobile optimiser, which needs a torch built with XNNPACK: without it, one line before
    any work (not torch's internal assert after the trace); with it, an artefact that predicts."""
    code, out, err = cli(pt_copy, "-f", "torchscript", "--optimize", "--json")
    import torch.backends.xnnpack   # after the command: it must not rely on this import having been made

    if not torch.backends.xnnpack.enabled:
        assert code == 1 and "needs a torch built with XNNPACK" in one_line(err) and "drop --optimize" in err
        assert json.loads(out)["type"] == "NotAvailable"
        assert sorted(p.name for p in pt_copy.parent.iterdir()) == ["tiny.pt"]
        return
    assert code == 0, err
    path = json.loads(out)["path"]
    code, out, err = cli("predict", "--model", path, "--source", images, "--json")
    assert code == 0 and len(json.loads(out)) == len(list(images.iterdir())), err


def test_edgetpu_without_its_compiler_is_refused_before_any_work(cli, pt_copy):
    """No edgetpu_compiler: one line naming how to install it, before the TFLite is built (no conversion log)."""
    import shutil

    if shutil.which("edgetpu_compiler") is not None:
        pytest.skip("edgetpu_compiler is installed here (test_backend_tensorflow exports with it)")
    from yolo_export import registry

    ok, why = registry.get("edgetpu").is_available()
    assert not ok and ("edgetpu_compiler" in why or "pip install" in why), why
    code, out, err = cli(pt_copy, "-f", "edgetpu", "--calib", "synthetic")
    assert code == 1 and ("apt-get install edgetpu-compiler" in one_line(err) or "pip install" in err), err
    assert sorted(p.name for p in pt_copy.parent.iterdir()) == ["tiny.pt"]


def test_top_help_says_where_the_export_options_are(cli):
    code, out, _ = cli("--help")
    assert code == 0 and "yexport MODEL --help" in out and "yexport formats" in out
