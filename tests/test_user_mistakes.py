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
