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
