"""The thread policy: one decision (yolo_export/threads.py), taken by every command and recorded in every timing."""

import json
import os
import subprocess
import sys

import pytest
from conftest import needs

from yolo_export import threads as th
from yolo_export.errors import ArgumentError


def _run(code: str, env_extra: dict | None = None, drop=()) -> str:
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity API on this platform")
def test_default_respects_affinity():
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
            "from yolo_export import threads; print(threads.available_cpus(), threads.resolve())")
    assert _run(code, drop=(th.ENV,)) == "1 1"


def test_cgroup_quota_caps_the_default(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert th._cgroup_quota(tmp_path) == 2
    assert th.available_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert th._cgroup_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert th._cgroup_quota(v1) == 1
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert th._cgroup_quota(v1) is None


def test_default_is_half_the_cpus(monkeypatch):
    monkeypatch.delenv(th.ENV, raising=False)
    monkeypatch.setattr(th, "spinning_pools", lambda: False)
    for cpus, expect in [(1, 1), (2, 1), (3, 1), (16, 8)]:
        monkeypatch.setattr(th, "available_cpus", lambda root=None, c=cpus: c)
        assert th.resolve(None) == expect and th.resolve(0) == expect


def test_explicit_then_env_then_default(monkeypatch):
    monkeypatch.setenv(th.ENV, "3")
    assert th.resolve(2) == 2 and th.resolve(None) == 3
    monkeypatch.setenv(th.ENV, "lots")
    with pytest.raises(ArgumentError, match=th.ENV):
        th.resolve(None)
    monkeypatch.delenv(th.ENV)
    with pytest.raises(ArgumentError, match="--threads"):
        th.resolve(-1)


def test_wait_policy_set_before_torch_loads_and_user_choice_kept():
    code = "import yolo_export, os, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert _run(code, drop=("OMP_WAIT_POLICY",)) == "PASSIVE"
    assert _run(code, {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
    # torch loaded first: its pools spin, so the default falls back to one thread
    code = "import torch, yolo_export, os; from yolo_export import threads; print(threads.resolve())"
    assert _run(code, drop=("OMP_WAIT_POLICY", th.ENV)) == "1"


def test_train_split_never_oversubscribes(monkeypatch):
    monkeypatch.delenv(th.ENV, raising=False)
    monkeypatch.setattr(th, "available_cpus", lambda root=None: 16)
    monkeypatch.setattr(th, "apply_torch", lambda n: n)
    monkeypatch.setattr(th, "spinning_pools", lambda: False)
    assert th.train_split(None, None) == (12, 4)
    assert th.train_split(None, None, processes=2) == (6, 2)
    assert th.train_split(None, 3) == (13, 3)
    assert th.train_split(2, None) == (2, 4)
    monkeypatch.setattr(th, "available_cpus", lambda root=None: 2)
    assert th.train_split(None, None) == (2, 0)
    assert th.loader_workers(None, 2) == 0 and th.loader_workers(5, 2) == 5


def test_threads_recorded_in_predict_val_and_export_json(cli, pt_copy, images, monkeypatch):
    monkeypatch.delenv(th.ENV, raising=False)
    code, out, err = cli("predict", "--model", pt_copy, "--source", images, "--threads", "1", "--json")
    assert code == 0, err
    assert {r["threads"] for r in json.loads(out)} == {1}
    code, out, err = cli(pt_copy, "-f", "torchscript", "--threads", "1", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["parity"]["threads"] == 1
    code, out, err = cli("val", "--model", doc["path"], "--data", "digits", "--threads", "1", "--json",
                         "--batch", "64")
    assert code == 0, err
    assert json.loads(out)["threads"] == 1
    monkeypatch.setenv(th.ENV, "2")
    code, out, err = cli("predict", "--model", doc["path"], "--source", images, "--json")
    assert code == 0, err
    assert {r["threads"] for r in json.loads(out)} == {2}
    code, _, err = cli("predict", "--model", pt_copy, "--source", images, "--threads", "0x")
    assert code == 2 and "--threads" in err


@needs("onnxruntime", extra="onnx")
def test_onnx_runtime_gets_the_count(tiny_yolo, tmp_path, images):
    from yolo_export import YOLO

    path = tiny_yolo.export("onnx", output=str(tmp_path / "m.onnx"), threads=1)
    y = YOLO(path, threads=1)
    r = y.predict(str(images))
    assert {x.threads for x in r} == {1}
    sess = y.backend().runner.session
    assert sess.get_session_options().intra_op_num_threads == 1


@needs("openvino", extra="openvino")
def test_openvino_reports_its_count(tiny_yolo, tmp_path):
    from yolo_export import YOLO

    path = tiny_yolo.export("openvino", output=str(tmp_path / "m_openvino_model"), threads=1)
    assert YOLO(path, threads=1).backend().threads == 1


@needs("tensorflow", "onnx2tf", extra="tensorflow")
def test_tensorflow_runners_get_the_count(tiny_yolo, tmp_path):
    """SavedModel and GraphDef: TF's intra-op pool is set before its runtime starts (a fresh process, as predict
    and val are) and the count TF reports is recorded; one inter-op thread."""
    import subprocess
    import sys

    sm = tiny_yolo.export("saved_model", output=str(tmp_path / "m_saved_model"), verify=False)
    pb = tiny_yolo.export("pb", output=str(tmp_path / "m.pb"), verify=False)
    code = ("import sys, tensorflow as tf; from yolo_export import YOLO\n"
            "n = [YOLO(p, threads=1).loaded_model().threads for p in sys.argv[1:]]\n"
            "print(n, tf.config.threading.get_intra_op_parallelism_threads(),"
            " tf.config.threading.get_inter_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", code, sm, pb], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.split("\n")[-2] == "[1, 1] 1 1"


def test_benchmark_and_train_record_threads(tiny_pt, tmp_path):
    from yolo_export import YOLO
    from yolo_export.engine.benchmark import benchmark

    res = benchmark(str(tiny_pt), formats=["torchscript"], precisions=["fp32"], rounds=1, max_images=64,
                    project=str(tmp_path), name="b", progress=False, threads=1, keep=False)
    assert [r["threads"] for r in res["rows"]] == [1, 1]
    out = YOLO("yolov8n-cls.yaml").train(data="digits", epochs=1, imgsz=32, batch=64, threads=1, fraction=0.05,
                                         project=str(tmp_path), name="t", progress=False, plots=False, val=False)
    assert out["threads"] == 1 and out["workers"] == th.train_split(1, None)[1]
