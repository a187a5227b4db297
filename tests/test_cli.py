"""The yexport CLI: the JSON contract, one-line errors, fast --help without torch."""

import json
import subprocess
import sys

import pytest
from conftest import needs


def test_help_does_not_import_torch():
    code = ("import sys; from yolo_export.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "heavy = [m for m in ('torch', 'numpy', 'onnx', 'PIL') if m in sys.modules]\n"
            "assert not heavy, heavy\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "export" in out.stdout and out.stdout.strip().endswith("ok")


def test_export_json_contract(cli, pt_copy):
    code, out, err = cli(pt_copy, "--format", "torchscript", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert {"format", "path", "size_mb", "time_s", "parity"} <= set(doc)
    assert doc["format"] == "torchscript" and doc["parity"]["status"] == "passed"


@needs("onnxruntime", extra="onnx")
def test_predict_and_info_json(cli, pt_copy, images):
    code, out, _ = cli(pt_copy, "-f", "onnx", "--json")
    onnx_path = json.loads(out)["path"]
    code, out, err = cli("predict", "--model", onnx_path, "--source", images, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert isinstance(res, list) and len(res) == 4 and {"path", "top1", "name", "confidence", "top5"} <= set(res[0])
    code, out, _ = cli("info", pt_copy, "--json")
    info = json.loads(out)
    assert info["params"] > 1e6 and info["nc"] == 10 and "gflops" in info
    code, out, _ = cli("info", onnx_path, "--json")
    assert json.loads(out)["format"] == "onnx"


def test_errors_are_one_line_with_nonzero_exit(cli, pt_copy, tmp_path):
    code, out, err = cli(pt_copy, "--format", "onxx")
    assert code == 2 and err.count("\n") == 1 and "did you mean 'onnx'" in err and "Traceback" not in err
    code, out, err = cli(tmp_path / "missing.pt", "--format", "onnx")
    assert code == 1 and err.startswith("error:") and err.count("\n") == 1
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    code, out, err = cli("predict", "--model", junk, "--source", tmp_path)
    assert code == 1 and "not a PyTorch checkpoint" in err and err.count("\n") == 1
    code, out, err = cli(pt_copy, "--format", "onnx", "--workspace", "2", "--json")
    assert code == 2 and json.loads(out)["error"].startswith("format 'onnx' does not take --workspace")
    code, out, err = cli("predict", "--model", pt_copy, "--source", tmp_path / "nope.jpg", "--device", "0")
    assert code == 1 and err.count("\n") == 1


def test_formats_lists_registry(cli):
    code, out, _ = cli("formats", "--json")
    rows = {r["format"]: r for r in json.loads(out)["formats"]}
    assert {"pytorch", "torchscript", "onnx"} <= set(rows)
    assert rows["torchscript"]["export"] is True


@needs("openvino", "nncf", extra="openvino")
def test_json_stdout_stays_one_document_when_a_library_prints(pt_copy):
    # NNCF draws its progress bars on stdout; --json must still print exactly one JSON document there
    import os

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = subprocess.run([sys.executable, "-m", "yolo_export", str(pt_copy), "--format", "openvino", "--int8",
                          "--calib", "synthetic", "--calib-images", "8", "--json"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert doc["format"] == "openvino" and doc["precision"] == "int8"


@needs("onnx", "onnxruntime", extra="onnx")
def test_info_counts_params_and_gflops_from_the_graph(cli, pt_copy):
    import onnx

    code, out, err = cli(pt_copy, "-f", "onnx", "--json", "--no-verify")
    path = json.loads(out)["path"]
    pt = json.loads(cli("info", pt_copy, "--json")[1])
    code, out, err = cli("info", path, "--json")
    info = json.loads(out)
    # counted on the fused graph: BatchNorm folded into the convolutions, so slightly fewer weights than the .pt
    assert 0.99 * pt["params"] < info["params"] < pt["params"]
    assert info["gflops"] == pytest.approx(pt["gflops"], rel=0.05, abs=1e-3)
    # a model with no metadata: info says so in one line (exit 1), not an empty class list
    m = onnx.load(path)
    del m.metadata_props[:]
    bare = pt_copy.with_name("bare.onnx")
    onnx.save(m, str(bare))
    code, out, err = cli("info", bare, "--json")
    assert code == 1 and err.count("\n") == 1 and "carries no names or imgsz" in err
    assert json.loads(out)["type"] == "MetadataError"


def test_formats_without_a_counter_say_why(cli, pt_copy):
    code, out, err = cli(pt_copy, "-f", "torchscript", "--json", "--no-verify")
    info = json.loads(cli("info", json.loads(out)["path"], "--json")[1])
    assert info["params"] is None and info["gflops"] is None and "not counted" in info["stats_reason"]


def test_usage_errors_are_one_line_and_json(cli):
    code, out, err = cli("predict", "--source", "x", "--json")
    assert code == 2 and err.count("\n") == 1 and "Missing option '--model'" in err and "Usage" not in err
    doc = json.loads(out)
    assert doc["type"] == "ArgumentError" and "--help" in doc["error"]
    code, out, err = cli("--bogus")
    assert code == 2 and err.count("\n") == 1 and "No such option" in err


def test_every_error_type_is_documented():
    from yolo_export import errors

    for name in errors.DOCUMENTED:
        assert issubclass(getattr(errors, name), errors.YoloExportError)
    assert type(errors.user_error(ValueError("bad"))).__name__ == "InternalError"
    assert "ValueError" not in str(errors.user_error(ValueError("bad")))
    assert type(errors.user_error(OSError(28, "No space left on device", "/x"))).__name__ == "FileError"
