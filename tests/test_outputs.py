"""Output paths behave like ``cp`` and never lose a file; default names keep precisions and sizes apart.

Each test snapshots every file that existed before (path -> bytes) and checks they all still exist, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs

from yolo_export import YOLO, registry
from yolo_export.engine.exporter import plan_output
from yolo_export.errors import OutputError

onnx_only = needs("onnx", "onnxruntime", extra="onnx")


def snapshot(*roots: Path) -> dict:
    out = {}
    for root in roots:
        for p in Path(root).rglob("*"):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def kept(before: dict) -> list:
    """Files of ``before`` that are gone or changed (empty when nothing was lost)."""
    return [p for p, h in before.items() if not Path(p).is_file() or hashlib.sha256(Path(p).read_bytes()).hexdigest()
            != h]


def leftovers(*roots: Path) -> list:
    return [str(p) for r in roots for p in Path(r).rglob("*") if ".tmp-" in p.name]


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


def test_existing_folder_receives_the_artefact(cli, pt_copy):
    out = pt_copy.parent / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    (out / "sub" / "x.bin").write_bytes(b"\0" * 10)
    before = snapshot(pt_copy.parent)
    code, stdout, err = cli(pt_copy, "-f", "torchscript", "-o", out, "--json", "--no-verify")
    assert code == 0, err
    assert json.loads(stdout)["path"] == str(out / "tiny.torchscript")
    assert kept(before) == [] and YOLO(out / "tiny.torchscript").names == YOLO(pt_copy).names
    # a second export into the same folder replaces that artefact (same format, recognised by its metadata)
    code, _, err = cli(pt_copy, "-f", "torchscript", "-o", out, "--no-verify")
    assert code == 0, err
    assert kept(before) == [] and leftovers(pt_copy.parent) == []
    # a trailing slash on a new name makes the folder
    code, stdout, err = cli(pt_copy, "-f", "torchscript", "-o", f"{pt_copy.parent / 'new'}/", "--json", "--no-verify")
    assert code == 0 and json.loads(stdout)["path"] == str(pt_copy.parent / "new" / "tiny.torchscript")


def test_dot_and_dotdot_are_written_into_never_removed(cli, pt_copy, monkeypatch):
    proj = pt_copy.parent / "proj"
    (proj / "sub").mkdir(parents=True)
    (proj / "sibling").mkdir()
    (proj / "sibling" / "code.py").write_text("print(1)\n")
    (proj / "sub" / "data.csv").write_text("a,b\n")
    src = proj / "sub" / "tiny.pt"
    src.write_bytes(pt_copy.read_bytes())
    before = snapshot(proj)
    monkeypatch.chdir(proj / "sub")
    for where, expect in ((".", proj / "sub" / "tiny.torchscript"), ("..", proj / "tiny.torchscript")):
        code, stdout, err = cli("tiny.pt", "-f", "torchscript", "-o", where, "--json", "--no-verify")
        assert code == 0, err
        assert Path(json.loads(stdout)["path"]).resolve() == expect
        assert kept(before) == []
    assert leftovers(proj) == []


@pytest.mark.parametrize("fmt", ["torchscript", "openvino"])
def test_dot_is_never_replaced_even_when_it_is_an_artefact(cli, pt_copy, monkeypatch, fmt):
    # the working directory itself is an artefact of the format: still written *into*, never replaced
    if fmt == "openvino" and registry.get("openvino").missing():
        pytest.skip("needs the 'openvino' extra")
    code, stdout, err = cli(pt_copy, "-f", fmt, "--json", "--no-verify")
    art = Path(json.loads(stdout)["path"])
    if not art.is_dir():
        return
    (art / "mine.txt").write_text("keep")
    before = snapshot(pt_copy.parent)
    monkeypatch.chdir(art)
    code, stdout, err = cli(pt_copy, "-f", fmt, "-o", ".", "--no-verify")
    assert code == 0, err
    assert kept(before) == [] and (art / art.name).is_dir()


def test_wrong_kind_or_suffix_refused_and_source_never_overwritten(cli, pt_copy):
    d = pt_copy.parent
    (d / "file.txt").write_text("text")
    before = snapshot(d)
    cases = [
        (["-f", "openvino", "-o", d / "file.txt"], "OpenVINO models are folders"),
        (["-f", "onnx", "-o", d / "base.pt"], "ONNX models are '.onnx' files (e.g. --output"),
        (["-f", "onnx", "-o", d / "m.bin"], f"--output {d / 'm.onnx'}"),
        (["-f", "pytorch", "-o", pt_copy], "is (or holds) the source model"),
        (["-f", "torchscript", "-o", d / "file.txt"], "'.torchscript' files"),
        (["-f", "openvino", "-o", d / "m.onnx"], "OpenVINO models are folders"),
    ]
    for args, words in cases:
        code, out, err = cli(pt_copy, *args)
        assert code == 1 and one_line(err) and words in err, (args, err)
        assert kept(before) == [] and leftovers(d) == []


def test_existing_non_artefact_file_needs_force(cli, pt_copy):
    d = pt_copy.parent
    target = d / "notes.torchscript"
    target.write_text("my notes, not a model")
    before = snapshot(d)
    code, out, err = cli(pt_copy, "-f", "torchscript", "-o", target)
    assert code == 1 and one_line(err) and "is not a TorchScript model" in err and "--force" in err
    assert kept(before) == []
    code, out, err = cli(pt_copy, "-f", "torchscript", "-o", target, "--force")
    assert code == 0 and YOLO(target).format == "torchscript"


def test_a_folder_that_is_not_an_artefact_is_never_replaced(pt_copy):
    b = registry.get("openvino")
    d = pt_copy.parent / "tiny_openvino_model"
    d.mkdir()
    (d / "photo.jpg").write_bytes(b"jpeg")
    before = snapshot(pt_copy.parent)
    with pytest.raises(OutputError, match="is not a OpenVINO model"):
        plan_output(b, None, d, reads=[(str(pt_copy), "is the source")], force=True)
    # named with -o, such a folder receives the artefact instead
    assert plan_output(b, str(d), d, reads=[]) == d / d.name
    assert kept(before) == []


@onnx_only
def test_precisions_and_sizes_coexist(cli, pt_copy):
    before = snapshot(pt_copy.parent)
    runs = [([], "tiny.onnx"), (["--half"], "tiny_float16.onnx"),
            (["--int8", "--data", "digits", "--calib-images", "8"], "tiny_int8.onnx"),
            (["--imgsz", "64"], "tiny_64.onnx"), (["--imgsz", "64", "--half"], "tiny_64_float16.onnx"),
            (["--imgsz", "32"], "tiny.onnx")]
    for extra, name in runs:
        code, out, err = cli(pt_copy, "-f", "onnx", "--no-verify", "--json", *extra)
        assert code == 0, err
        assert Path(json.loads(out)["path"]).name == name
    names = sorted(p.name for p in pt_copy.parent.iterdir())
    assert names == sorted({"tiny.pt", *(n for _, n in runs)})
    assert kept(before) == []
    assert YOLO(pt_copy.parent / "tiny_int8.onnx").metadata["args"]["int8"] is True


def test_default_name_rule():
    tfl, ov, etpu = registry.get("tflite"), registry.get("openvino"), registry.get("edgetpu")
    base = Path("runs/best")
    assert registry.default_output(tfl, base, {"half": True}, 224).name == "best_float16.tflite"
    assert registry.default_output(ov, base, {"int8": True, "imgsz": 320}, 224).name == "best_320_int8_openvino_model"
    assert registry.default_output(ov, base, {"imgsz": 224}, 224).name == "best_openvino_model"
    assert registry.default_output(etpu, base, {"int8": True}, 224).name == "best_edgetpu.tflite"


def test_stale_staging_of_a_killed_run_is_cleaned(cli, pt_copy):
    d = pt_copy.parent
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = d / f".tiny.torchscript.tmp-{dead.pid}-abc"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"x" * 100)
    live = d / f".tiny.torchscript.tmp-{os.getpid()}-live"  # a live process's staging folder is left alone
    live.mkdir()
    code, out, err = cli(pt_copy, "-f", "torchscript", "--no-verify")
    assert code == 0, err
    assert not stale.exists() and live.exists()


def test_sigkill_of_the_parent_leaves_staging_that_the_next_run_removes(pt_copy):
    # a real SIGKILL mid-export: the staging folder may survive the kill; the next run removes it
    import signal
    import time

    d = pt_copy.parent
    p = subprocess.Popen([sys.executable, "-m", "yolo_export", str(pt_copy), "-f", "torchscript"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not leftovers(d) and time.time() - t0 < 60 and p.poll() is None:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = subprocess.run([sys.executable, "-m", "yolo_export", str(pt_copy), "-f", "torchscript"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert leftovers(d) == []


@pytest.fixture()
def small_disk(tmp_path):
    """A 3 MB tmpfs (root) where the artefact cannot fit; skipped where mounting is not allowed."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root); the RLIMIT_FSIZE test covers the write failure")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=onnx_only)])
def test_disk_full_one_line_old_file_kept_nothing_left(pt_copy, small_disk, fmt):
    keep = small_disk / "keep.txt"
    keep.write_text("mine")
    before = snapshot(small_disk, pt_copy.parent)
    r = subprocess.run([sys.executable, "-m", "yolo_export", str(pt_copy), "-f", fmt, "-o", str(small_disk), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])  # not 134 (SIGABRT)
    assert one_line(r.stderr), r.stderr
    assert "no space left" in r.stderr
    assert json.loads(r.stdout)["type"] == "FileError"
    assert kept(before) == [] and leftovers(small_disk) == []
    assert sorted(p.name for p in small_disk.iterdir()) == ["keep.txt"]


def test_file_size_limit_child_fails_cleanly(pt_copy, tmp_path):
    # the same write failure without root: a child whose files may not grow past 1 MB (EFBIG instead of ENOSPC)
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
            "from yolo_export.cli import main\n"
            f"main([{str(pt_copy)!r}, '-f', 'torchscript', '-o', {str(tmp_path / 'o')!r} + '/', '--json'])\n")
    before = snapshot(pt_copy.parent)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr[-3000:]
    assert one_line(r.stderr) and "file too large" in r.stderr.lower(), r.stderr
    assert kept(before) == [] and leftovers(tmp_path) == [] and not list((tmp_path / "o").iterdir())


def test_loading_recognises_an_artefact_by_its_contents(pt_copy, tmp_path, images):
    if registry.get("openvino").missing():
        pytest.skip("needs the 'openvino' extra")
    y = YOLO(pt_copy)
    out = tmp_path / "ov64"
    assert Path(y.export("openvino", output=str(out), verify=False)) == out
    ov = YOLO(out)
    assert ov.format == "openvino" and ov.names == y.names
    # a model-server layout: models/cls/1/model.xml (+ model.bin)
    served = tmp_path / "models" / "cls" / "1"
    served.parent.mkdir(parents=True)
    out.rename(served)
    for target in (served / "model.xml", served):
        m = YOLO(target)
        assert m.format == "openvino"
        assert [r.probs.top1 for r in m(images)] == [r.probs.top1 for r in y(images)]


@pytest.mark.parametrize("fmt", ["ncnn", "openvino", "saved_model", "tfjs", "paddle", "coreml"])
def test_a_recognised_folder_holding_other_files_is_never_replaced(pt_copy, fmt):
    """A folder recognised as an artefact of the format (by its metadata.yaml, or a real one) that also holds files
    an export of that format never writes: named with -o it receives the artefact; as the target it is refused."""
    b = registry.get(fmt)
    d = pt_copy.parent / f"mine{b.suffix}"
    (d / "sub").mkdir(parents=True)
    (d / "metadata.yaml").write_text("names:\n  0: a\n  1: b\n")
    (d / "thesis.txt").write_text("years of work")
    (d / "sub" / "data.bin").write_bytes(b"\0" * 10)
    before = snapshot(pt_copy.parent)
    assert plan_output(b, str(d), d, reads=[]) == d / d.name
    with pytest.raises(OutputError, match=r"holds files no .* export writes \(.*thesis.txt|is not a"):
        plan_output(b, None, d, reads=[], force=True)
    assert kept(before) == []


def test_an_artefact_folder_holding_only_its_own_files_is_still_replaced(pt_copy):
    b = registry.get("ncnn")
    d = pt_copy.parent / "mine_ncnn_model"
    d.mkdir()
    (d / "metadata.yaml").write_text("names:\n  0: a\n  1: b\n")
    for name in ("model.ncnn.param", "model.ncnn.bin", "model_ncnn.py"):
        (d / name).write_text("x")
    assert plan_output(b, str(d), d, reads=[]) == d
    assert plan_output(b, None, d, reads=[]) == d
