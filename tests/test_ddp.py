"""DDP: two CPU processes (gloo) launched by torchrun train one run; only rank 0 writes files and prints."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import torch


def test_torchrun_two_cpu_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "yolo_export", "train", "--model", "yolov8n-cls.yaml", "--data", "digits", "--epochs", "2",
           "--imgsz", "32", "--fraction", "0.12", "--batch", "16", "--workers", "0", "--device", "cpu",
           "--project", str(tmp_path), "--name", "ddp", "--no-progress", "--json"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                         start_new_session=True)
    try:
        stdout, stderr = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # torchrun and both ranks
        stdout, stderr = p.communicate()
        raise AssertionError(f"torchrun timed out: {stderr[-2000:]}") from None
    assert p.returncode == 0, stderr[-3000:]
    docs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert len(docs) == 1, stdout  # rank 0 alone prints
    out = docs[0]
    assert out["world_size"] == 2
    # one set of result files, in the one run folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]
    run = tmp_path / "ddp"
    assert (run / "weights" / "best.pt").is_file() and (run / "weights" / "last.pt").is_file()
    assert not [p for p in (run / "weights").iterdir() if p.name.startswith(".")]  # no temp files
    with open(run / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    # the reported metrics are those of the saved weights: best.pt validates at its epoch's reported top-1
    best_row = rows[out["best_epoch"] - 1]
    assert float(best_row["metrics/top1"]) == round(out["top1"], 5)
    # metrics are reduced across ranks: every val image counted exactly once
    assert sum(map(sum, out["confusion_matrix"])) == 359
    ck = torch.load(run / "weights" / "last.pt", map_location="cpu", weights_only=True)
    assert ck["train_args"]["world_size"] == 2 and ck["finished"] and "train_state" not in ck
    # each rank ran ceil(172 / 2) = 86 samples per epoch in batches of 8: 11 steps
    assert ck["train_summary"]["ema_updates"] == 2 * 11


def _torchrun(args, cwd, env):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--max-restarts",
           "0", "-m", "yolo_export", "train", *args, "--workers", "0", "--device", "cpu", "--no-progress", "--json"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            start_new_session=True)


def _ranks(pid: int) -> list[int]:
    import psutil

    out = []
    for c in psutil.Process(pid).children(recursive=True):
        try:
            line = " ".join(c.cmdline())
        except psutil.Error:
            continue
        if "yolo_export" in line and "torch.distributed.run" not in line:
            out.append(c.pid)
    return out


def test_killed_rank_stops_the_run_and_resume_continues(tmp_path):
    """A rank killed mid-run (a node lost): torchrun stops the other rank and exits non-zero, last.pt is the last
    finished epoch, whole; `train --resume` under torchrun again finishes the run."""
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = _torchrun(["--model", "yolov8n-cls.yaml", "--data", "digits", "--epochs", "3", "--imgsz", "32", "--fraction",
                   "0.12", "--batch", "16", "--project", str(tmp_path), "--name", "ddp"], tmp_path, env)
    last = tmp_path / "ddp" / "weights" / "last.pt"
    killed = None
    try:
        deadline = time.time() + 240
        while time.time() < deadline and p.poll() is None:
            if last.exists():
                ranks = _ranks(p.pid)
                if ranks:
                    killed = ranks[-1]
                    os.kill(killed, signal.SIGKILL)
                    break
            time.sleep(0.05)
        _, stderr = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise AssertionError("torchrun did not stop after a rank was killed") from None
    assert killed, "the run finished before a rank could be killed"
    assert p.returncode != 0
    assert not _alive(killed)
    ck = torch.load(last, map_location="cpu", weights_only=True)
    assert not ck.get("finished") and "train_state" in ck and ck["epoch"] in (0, 1)  # a finished epoch, 0-based
    assert not [f for f in last.parent.iterdir() if f.name.startswith(".")]  # no temp files left behind

    p = _torchrun(["--resume", str(last)], tmp_path, env)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr[-3000:]
    ck = torch.load(last, map_location="cpu", weights_only=True)
    assert ck["finished"] and ck["train_args"]["world_size"] == 2
    with open(tmp_path / "ddp" / "results.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2", "3"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
