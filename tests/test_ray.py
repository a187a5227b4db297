"""Distributed predict and val on Ray Data, on a real local Ray cluster (2 CPUs, small object store, usage stats
off): rows identical to local predict, in input order; a killed actor costs no row and adds none; a rerun after an
interruption predicts only what is missing; val's metrics equal local val's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import needs

pytestmark = [needs("ray", "pyarrow", extra="ray"), needs("onnxruntime", "onnx", extra="onnx")]


@pytest.fixture(scope="module")
def ray_cluster():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from yolo_export.distributed import init_ray

    ray = init_ray(num_cpus=2, object_store_memory=100 * 2**20)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def onnx_model(tiny_pt, tmp_path_factory) -> Path:
    from yolo_export import YOLO

    d = tmp_path_factory.mktemp("ray")
    shutil.copy(tiny_pt, d / "tiny.pt")
    return Path(YOLO(d / "tiny.pt").export("onnx", imgsz=32, dynamic=True, batch=16))


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    from PIL import Image

    d = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for i in range(240):
        w, h = (128, 96) if i % 3 else (96, 128)
        lo = rng.integers(0, 256, (h // 8, w // 8, 3)).astype(np.uint8)
        Image.fromarray(lo).resize((w, h), Image.Resampling.BICUBIC).save(d / f"{i:04d}.jpg", quality=85)
    (d / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)).save(d / "sub" / "z.png")
    return d


def read_jsonl(p) -> list[dict]:
    return [json.loads(line) for line in Path(p).read_text().splitlines()]


@pytest.fixture(scope="module")
def local_rows(onnx_model, many_images, tmp_path_factory) -> list[dict]:
    from yolo_export.distributed import predict_to_file

    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    s = predict_to_file(onnx_model, [str(many_images)], out, batch=8, progress=False)
    assert s["images"] == 241
    return read_jsonl(out)


def test_ray_predict_equals_local_and_parquet(ray_cluster, onnx_model, many_images, local_rows, tmp_path):
    import pyarrow.parquet as pq

    from yolo_export.distributed import ray_predict

    s = ray_predict(onnx_model, str(many_images), tmp_path / "r.jsonl", batch=16, progress=False)
    assert (s["images"], s["predicted"], s["errors"]) == (241, 241, 0)
    assert s["threads"] == [1]  # one per actor (each holds one CPU), as ONNX Runtime reports it
    assert read_jsonl(tmp_path / "r.jsonl") == local_rows
    s = ray_predict(onnx_model, str(many_images / "*.jpg"), tmp_path / "r.parquet", batch=32, threads=2,
                    progress=False)
    assert s["threads"] == [2]  # --threads reaches the runtime in every actor
    assert pq.read_table(tmp_path / "r.parquet").to_pylist() == local_rows[:240]
    assert not list(tmp_path.glob("*.partial.jsonl"))


def test_rerun_after_interruption_predicts_only_the_rest(ray_cluster, onnx_model, many_images, local_rows,
                                                         tmp_path):
    from yolo_export.distributed import ray_predict

    out = tmp_path / "r.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in local_rows[:100])
    out.write_text(text + json.dumps(local_rows[100])[:40])  # killed in the middle of a line
    s = ray_predict(onnx_model, str(many_images), out, batch=16, progress=False)
    assert (s["skipped_already_written"], s["predicted"]) == (100, 141)
    assert read_jsonl(out) == local_rows
    s = ray_predict(onnx_model, str(many_images), out, batch=16, progress=False)
    assert (s["skipped_already_written"], s["predicted"]) == (241, 0)  # nothing left: Ray is not even asked
    # a results file of other inputs is refused, never overwritten
    from yolo_export.errors import YoloExportError

    with pytest.raises(YoloExportError, match="other inputs"):
        ray_predict(onnx_model, str(many_images / "sub"), out, progress=False)
    assert read_jsonl(out) == local_rows


def _actor_pids() -> list:
    import psutil

    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "PredictActor" in " ".join(p.cmdline()):
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


def test_killed_actor_costs_no_row_and_adds_none(ray_cluster, onnx_model, many_images, local_rows, tmp_path):
    from yolo_export.distributed import ray_predict

    out = tmp_path / "r.jsonl"
    res, killed = {}, {}
    t = threading.Thread(target=lambda: res.update(s=ray_predict(onnx_model, str(many_images), out, batch=2,
                                                                   actors=2, progress=False)))
    t.start()
    deadline = time.time() + 120
    while time.time() < deadline and not killed and t.is_alive():
        n = len(out.read_text().splitlines()) if out.exists() else 0
        pids = _actor_pids()
        if n >= 2 and pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.update(pid=pids[0], rows_then=n)
        time.sleep(0.01)
    t.join(180)
    assert killed, "the run ended before an actor could be killed"
    assert killed["rows_then"] < 241, killed
    assert res["s"]["predicted"] == 241
    rows = read_jsonl(out)
    assert [r["index"] for r in rows] == list(range(241))  # none lost, none twice, in order
    assert rows == local_rows


def test_ray_val_equals_local_val(ray_cluster, onnx_model, tmp_path):
    """Same metrics, and ``val --output`` writes the same per-image rows from local and Ray val."""
    from click.testing import CliRunner

    from yolo_export import YOLO
    from yolo_export.cli import main
    from yolo_export.distributed import ray_val

    local = YOLO(onnx_model).val(data="digits", fraction=0.25, batch=16, progress=False, predictions=True)
    dist = ray_val(onnx_model, "digits", fraction=0.25, batch=16, progress=False, predictions=True)
    for k in ("top1", "top5", "n", "confusion_matrix", "per_class", "skipped", "files", "predictions"):
        assert dist[k] == local[k], k
    assert dist["loss"] == pytest.approx(local["loss"], rel=1e-6)
    assert dist["threads"] == 1
    docs = {}
    for where, extra in (("local", []), ("ray", ["--ray"])):
        r = CliRunner().invoke(main, ["val", "-m", str(onnx_model), "--data", "digits", "--json", *extra,
                                      "--output", str(tmp_path / f"{where}.jsonl")])
        assert r.exit_code == 0, r.output
        docs[where] = json.loads(r.output.strip().splitlines()[-1])
        assert "files" not in docs[where] and docs[where]["output"]["rows"] == docs[where]["n"]
    rows = read_jsonl(tmp_path / "local.jsonl")
    assert read_jsonl(tmp_path / "ray.jsonl") == rows  # the same rows either way
    assert [x["index"] for x in rows] == list(range(len(rows)))
    assert docs["local"]["output"]["correct"] == round(docs["local"]["top1"] * docs["local"]["n"])
    assert all(set(x) == {"index", "path", "label", "label_name", "top1", "name", "top5", "correct", "error"}
               and x["correct"] == (x["top1"] == x["label"]) and len(x["top5"]) == 5 for x in rows)
    # a file that is not an earlier val --output is never overwritten
    (tmp_path / "other.jsonl").write_text("keep me\n")
    r = CliRunner().invoke(main, ["val", "-m", str(onnx_model), "--data", "digits", "--output",
                                  str(tmp_path / "other.jsonl")])
    assert r.exit_code == 1 and "choose another --output" in r.output
    assert (tmp_path / "other.jsonl").read_text() == "keep me\n"


def test_ray_without_output_is_one_line(onnx_model, many_images):
    from click.testing import CliRunner

    from yolo_export.cli import main

    r = CliRunner().invoke(main, ["predict", "-m", str(onnx_model), "-s", str(many_images), "--ray"])
    assert r.exit_code == 2 and "add --output results.jsonl" in r.output
    r = CliRunner().invoke(main, ["predict", "-m", str(onnx_model), "-s", str(many_images), "-o", "x.csv"])
    assert r.exit_code == 2 and ".jsonl or .parquet" in r.output


def test_serve_on_ray_two_replicas_same_api(onnx_model, tmp_path):
    """`yexport serve --ray --replicas 2`: the same app as Ray Serve replicas on a local cluster; same answers as
    predict, 4xx JSON for a bad request; SIGTERM shuts the application and the cluster down."""
    import io
    import subprocess
    import sys

    import httpx
    from PIL import Image
    from test_serve import free_port

    from yolo_export import YOLO

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (48, 64, 3)).astype(np.uint8)).save(buf, "PNG")
    (tmp_path / "a.png").write_bytes(buf.getvalue())
    want = YOLO(onnx_model).predict(str(tmp_path / "a.png"))[0].to_dict()
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "yolo_export", "serve", str(onnx_model), "--port", str(port), "--ray",
                          "--replicas", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            assert p.poll() is None, p.communicate()[1][-3000:]
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:  # not on to the requests, whose error answers would fail them with a puzzling KeyError
            raise AssertionError("the Ray server did not become ready within 300 s")
        got = [httpx.post(url + "/predict", content=buf.getvalue(), timeout=30).json()[0] for _ in range(4)]
        for g in got:
            assert (g["top1"], g["name"], g["top5"]) == (want["top1"], want["name"], want["top5"])
        bad = httpx.post(url + "/predict", content=b"not an image", timeout=30)
        assert bad.status_code == 415 and bad.json() == {"error": bad.json()["error"], "type": "ImageError"}
        assert httpx.get(url + "/metadata", timeout=30).json()["threads"] == 1  # the actor's one CPU
        p.send_signal(signal.SIGTERM)
        assert p.wait(90) == 0, p.communicate()[1][-3000:]
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
