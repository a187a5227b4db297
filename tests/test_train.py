"""Training and validation on real data (digits subsets at imgsz 32), resume after kill -9, corrupt images,
pretrained transfer, val on .pt and on an ONNX export."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import needs


QUICK = {"data": "digits", "imgsz": 32, "fraction": 0.12, "batch": 16, "workers": 0, "threads": 1,
         "progress": False}


def _rows(run: Path) -> list[dict]:
    with open(run / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from yolo_export import YOLO

    project = tmp_path_factory.mktemp("runs")
    y = YOLO("yolov8n-cls.yaml")
    out = y.train(epochs=2, project=str(project), name="t", **QUICK)
    return y, out, project / "t"


def test_train_writes_the_run_folder(trained):
    y, out, run = trained
    for f in ("args.yaml", "results.csv", "results.png", "confusion_matrix.png", "weights/best.pt",
              "weights/last.pt"):
        assert (run / f).is_file(), f
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["train/loss"]) < float(rows[0]["train/loss"])
    # our safe format: plain data, fp16 EMA weights, the facade now holds best.pt
    best = torch.load(run / "weights/best.pt", map_location="cpu", weights_only=True)
    last = torch.load(run / "weights/last.pt", map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for v in best["state_dict"].values() if v.is_floating_point())
    assert "train_state" not in best and "train_state" not in last and last["finished"] is True
    assert best["names"] == {i: str(i) for i in range(10)} and best["imgsz"] == 32
    assert best["preprocess"]["crop"] == 32 and best["train_args"]["data"] == "digits"
    assert y.ckpt_path == str(run / "weights/best.pt") and y.model.names[3] == "3"
    assert set(out) >= {"top1", "top5", "confusion_matrix", "per_class", "best_epoch", "images_per_s"}
    assert sum(map(sum, out["confusion_matrix"])) == 359  # the whole val split
    assert 0 <= out["top1"] <= out["top5"] <= 1


@needs("onnx", "onnxruntime", extra="onnx")
def test_val_pt_and_onnx_agree(trained, cli):
    from yolo_export import YOLO

    _, _, run = trained
    best = run / "weights/best.pt"
    m_pt = YOLO(best).val(data="digits", predictions=True, progress=False)
    assert m_pt.top1 == m_pt["top1"] and len(m_pt.confusion_matrix) == 10
    assert set(m_pt.per_class) == {str(i) for i in range(10)} and m_pt.speed["inference"] > 0
    onnx = YOLO(best).export("onnx", data="digits")
    code, stdout, _ = cli("val", "--model", onnx, "--data", "digits", "--json", "--predictions")
    assert code == 0
    m_onnx = json.loads(stdout)
    assert m_onnx["format"] == "onnx" and m_onnx["n"] == 359
    assert m_onnx["top1"] == pytest.approx(m_pt["top1"]) and m_onnx["top5"] == pytest.approx(m_pt["top5"])
    assert m_onnx["files"] == m_pt["files"]
    agree = np.mean(np.array(m_onnx["predictions"]) == np.array(m_pt["predictions"]))
    assert agree >= 0.997


def test_val_cli_text_and_errors(trained, cli, tmp_path):
    _, _, run = trained
    code, stdout, _ = cli("val", "--model", run / "weights/best.pt")  # data comes from the checkpoint
    assert code == 0 and "top1" in stdout and "speed per image" in stdout
    code, _, stderr = cli("val", "--model", run / "weights/best.pt", "--data", tmp_path / "missing")
    assert code == 1 and "dataset not found" in stderr


def test_resume_of_a_finished_run_is_refused(trained, cli):
    _, _, run = trained
    code, _, stderr = cli("train", "--resume", run / "weights/last.pt")
    assert code == 1 and "nothing to resume" in stderr
    code, _, stderr = cli("train", "--resume", run / "weights/best.pt")
    assert code == 1 and "no training state" in stderr


def test_pretrained_transfer_to_new_classes(trained, tmp_path):
    from test_data import make_folder

    from yolo_export import YOLO

    _, _, run = trained
    root = make_folder(tmp_path / "abc", n_train=4, n_val=2, size=(20, 20))
    y = YOLO("yolov8n-cls.yaml")
    out = y.train(data=str(root), epochs=1, imgsz=32, batch=4, workers=0, threads=1, progress=False, plots=False,
                  pretrained=str(run / "weights/best.pt"), project=str(tmp_path / "p"), name="ft")
    assert y.trainer.transferred[1] - y.trainer.transferred[0] == 2  # all but the 10-class linear layer
    assert y.model.names == {0: "a", 1: "b", 2: "c"} and len(out["confusion_matrix"]) == 3
    # fine-tuning a .pt on a new class list resets its head
    y2 = YOLO(run / "weights/best.pt")
    y2.train(data=str(root), epochs=1, imgsz=32, batch=4, workers=0, threads=1, progress=False, plots=False,
             project=str(tmp_path / "p"), name="ft2")
    assert y2.model.model[-1].linear.out_features == 3


def test_pretrained_from_an_ultralytics_checkpoint(tiny_yolo, tmp_path, logs):
    from test_data import make_folder
    from ultralytics_fake import make_ultralytics_checkpoint

    from yolo_export import YOLO

    src = tmp_path / "yolov8n-cls-ultra.pt"
    make_ultralytics_checkpoint(src, tiny_yolo.model)
    root = make_folder(tmp_path / "abc", n_train=3, n_val=1, size=(20, 20))
    y = YOLO("yolov8n-cls.yaml")
    y.train(data=str(root), epochs=1, imgsz=32, batch=4, workers=0, threads=1, progress=False, plots=False,
            pretrained=str(src), project=str(tmp_path / "p"), name="ft")
    n, total = y.trainer.transferred
    assert total - n == 2
    assert any(f"transferred {n}/{total} tensors" in m and "Ultralytics" in m for m in logs)


def test_corrupt_image_during_training_is_skipped_and_counted(tmp_path, cli):
    from test_data import make_folder

    root = make_folder(tmp_path / "ds", n_train=5, n_val=2, size=(16, 16))
    (root / "train" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, stdout, stderr = cli("train", "--data", root, "--epochs", "2", "--imgsz", "32", "--batch", "8",
                               "--workers", "0", "--threads", "1", "--no-plots", "--no-progress",
                               "--project", tmp_path / "p", "--json")
    assert code == 0, stderr
    out = json.loads(stdout)  # nothing but the JSON document on stdout
    assert out["skipped_images"] == 2  # once per epoch
    assert [r["skipped"] for r in _rows(Path(out["save_dir"]))] == ["1", "1"]


def test_bad_arguments(tmp_path):
    from yolo_export import YOLO
    from yolo_export.errors import YoloExportError

    with pytest.raises(YoloExportError, match="unknown optimizer 'AdamX'; did you mean"):
        YOLO("yolov8n-cls.yaml").train(data="digits", optimizer="AdamX")
    with pytest.raises(YoloExportError, match="unknown training argument"):
        YOLO("yolov8n-cls.yaml").train(data="digits", epochz=3)


def _train_cmd(project, name, *extra):
    return [sys.executable, "-m", "yolo_export", "train", "--data", "digits", "--imgsz", "32", "--fraction", "0.12",
            "--batch", "16", "--workers", "0", "--threads", "1", "--epochs", "4", "--no-plots", "--no-progress",
            "--project", str(project), "--name", name, *extra]


def test_resume_after_kill_continues_exactly(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    last = tmp_path / "killed" / "weights" / "last.pt"
    p = subprocess.Popen(_train_cmd(tmp_path, "killed"), env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not last.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "training ended before it could be killed"
    ck = torch.load(last, map_location="cpu", weights_only=True)
    done = ck["epoch"] + 1
    assert 1 <= done < 4 and not ck["train_state"]["finished"]
    nb = ck["train_state"]["scheduler"]["it"] + 1
    assert nb % done == 0
    nb //= done
    # resume in a fresh process; then an uninterrupted twin run to compare with
    r = subprocess.run(_train_cmd(tmp_path, "ignored", "--resume", str(last)), env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"resuming {last} from epoch {done + 1}/4" in r.stderr
    assert not (tmp_path / "ignored").exists()
    twin = subprocess.run(_train_cmd(tmp_path, "twin"), env=env, capture_output=True, text=True, timeout=300)
    assert twin.returncode == 0, twin.stderr
    ck2 = torch.load(last, map_location="cpu", weights_only=True)
    st = ck2["train_summary"]  # a finished run's last.pt keeps these facts, not the training state
    assert ck2["epoch"] == 3 and ck2["finished"] and "train_state" not in ck2
    assert st["scheduler_it"] == 4 * nb - 1 and st["ema_updates"] == 4 * nb
    steps = set(st["optimizer_steps"])
    assert steps == {4 * nb}  # the optimizer state carried on from the killed run
    resumed, straight = _rows(tmp_path / "killed"), _rows(tmp_path / "twin")
    assert [r["epoch"] for r in resumed] == ["1", "2", "3", "4"]
    for a, b in zip(resumed, straight):
        for k in ("train/loss", "val/loss", "metrics/top1", "lr"):
            assert float(a[k]) == pytest.approx(float(b[k]), abs=2e-5), (a["epoch"], k)


def test_sigterm_says_what_is_saved_then_resume_refuses_contradictions(tmp_path, cli):
    """SIGTERM mid-run: one line naming the saved epoch and the resume command, exit 130, no temp file; --resume
    then refuses arguments that contradict the checkpoint, and a stale temp file of a killed write is cleaned."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    last = tmp_path / "run" / "weights" / "last.pt"
    p = subprocess.Popen(_train_cmd(tmp_path, "run"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 180
    while not last.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    done = torch.load(last, map_location="cpu", weights_only=True)["epoch"] + 1
    assert f"{last} holds epoch {done}/4; resume with: yexport train --resume {last}" in lines[0]
    assert not [f for f in last.parent.iterdir() if f.name.startswith(".")]
    before = last.read_bytes()
    for args, words in [(["--data", tmp_path], "--data"), (["--epochs", "9"], "--pretrained"),
                        (["--model", "yolov8s-cls.yaml"], "yolov8n-cls model; --model yolov8s-cls.yaml")]:
        code, out, err = cli("train", "--resume", last, *args)
        assert code == 2 and err.count("\n") == 1 and words in err and "contradicts" in err, err
    assert last.read_bytes() == before
    # a checkpoint write killed mid-way leaves .last.pt.tmp-PID-*: the next start removes it
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = last.with_name(f".last.pt.tmp-{dead.pid}-x")
    stale.write_bytes(b"")
    r = subprocess.run(_train_cmd(tmp_path, "run", "--resume", str(last)), env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not [f for f in last.parent.iterdir() if f.name.startswith(".")]
    ck = torch.load(last, map_location="cpu", weights_only=True)
    assert ck["finished"] and "train_state" not in ck  # stripped to what can still be used
    assert last.stat().st_size < 0.7 * len(before)


def test_photo_augmentation_keeps_the_reference_crop_scale(tmp_path):
    """Photos (any ImageFolder) train with RandomResizedCrop over 50-100 % of the area, as the reference's
    classification training does (ImageNet's 8-100 % learned ~3x slower per epoch on digits-32); digits keep theirs.
    The choice is recorded in the run's arguments."""
    from PIL import Image

    from yolo_export import YOLO
    from yolo_export.data.augment import DIGITS, PHOTO, TrainTransform, aug_preset

    assert PHOTO["scale"] == (0.5, 1.0) and aug_preset("some/folder")["scale"] == (0.5, 1.0)
    assert aug_preset("digits") == DIGITS and TrainTransform({"crop": 8}).scale == (0.5, 1.0)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "ds" / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                    tmp_path / "ds" / split / c / f"{i}.png")
    y = YOLO("yolov8n-cls.yaml")
    y.train(data=str(tmp_path / "ds"), epochs=1, imgsz=8, batch=4, workers=0, plots=False, progress=False,
            project=str(tmp_path / "runs"), name="t")
    import yaml

    args = yaml.safe_load((tmp_path / "runs" / "t" / "args.yaml").read_text())
    assert args["augment"]["scale"] == [0.5, 1.0]
