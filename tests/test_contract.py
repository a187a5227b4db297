"""The Backend contract, checked for every registered format and every precision it declares.

Rows come from the registry (``registry.all_backends()``), so a new built-in or an installed plugin is tested here
without a line added. Each row exports a real model and runs the artefact in its real runtime:

- export: the default name, nothing half-written, parity within the format's declared tolerance;
- reload through ``YOLO(path)``: format, names, input size; predict a folder (through AutoBackend's batch split)
  with the same answers as the ``.pt``, judged against the declared tolerance; the runner reports its threads;
- metadata: the carrier reads back what was written, a rewrite reads back and leaves the model runnable, ``info``;
- ``for_path`` / ``recognise`` find the format (a folder format also under a name that says nothing), and
  ``graph_stats`` answers;
- a truncated or garbage artefact is one line of the project's errors at the CLI, never a traceback.

fp32 rows export the conditioned tiny model (``backend_models``: decisive outputs on generated inputs, instant);
fp16 and INT8 rows export a model trained on digits (``conftest.trained_pt``) and check parity on digits images,
since an untrained model has no margins to keep under rounding. Where this machine cannot go further (TensorRT
without an NVIDIA GPU, CoreML prediction off macOS, the Edge TPU compiler, fp16 TorchScript without CUDA) the row
checks the one-line refusal and skips with its reason; a missing extra skips naming the extra, except under
``CI=true`` for an extra that ``.[all]`` installs.

Rows are grouped per backend module (``xdist_group``): with ``--dist loadgroup`` each family runs on one worker, so
its exports are shared (the TensorFlow family converts once) and families run in parallel. ``--backends-of
EXTRA,...`` keeps the formats of those pip extras (``core``: the formats that need none), for a job that installs
only some extras.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend_models import Row
from yolo_export import YOLO, errors, registry
from yolo_export.data.transforms import default_preprocess
from yolo_export.data.samples import check_inputs
from yolo_export.verify import compare

ERROR_TYPES = {n for n, c in vars(errors).items() if isinstance(c, type) and issubclass(c, errors.YoloExportError)}
RENAMED = {i: f"renamed {i}" for i in range(10)}


def rows(selected: set[str] | None, first_only: bool = False):
    for b in registry.all_backends():
        if selected is not None and (b.extra or "core") not in selected:
            continue
        group = type(b).__module__.rsplit(".", 1)[-1]
        for prec in b.precisions[:1 if first_only else None]:
            yield pytest.param(b.name, prec, id=f"{b.name}-{prec}", marks=pytest.mark.xdist_group(group))


def pytest_generate_tests(metafunc):
    if {"fmt", "prec"} <= set(metafunc.fixturenames):
        opt = metafunc.config.getoption("backends_of")
        selected = {s.strip() for s in opt.split(",")} if opt else None
        # a bad artefact meets the same reader and runtime whatever its precision: the first one is enough
        metafunc.parametrize("fmt,prec", list(rows(selected, first_only="how" in metafunc.fixturenames)))


@pytest.fixture()
def row(fmt, prec, exported) -> Row:
    return exported(fmt, prec)


def judge(b, prec: str, ref: np.ndarray, out: np.ndarray) -> dict:
    """The format's declared tolerance: max abs probability difference and top-1 agreement on decisive inputs."""
    tol, min_agree = b.tolerance.get(prec, (None, 0.9))
    res = compare(ref, out, tol)
    if tol is not None:
        assert res["max_abs_diff"] <= tol, res
    assert res["top1_agreement_decisive"] >= min_agree, res
    return res


def files_of(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


# ------------------------------------------------------------------------------------------ the contract
def test_export_names_parity_and_leaves_nothing_half_written(row):
    row.need()
    b, path = row.backend, row.path
    assert path.exists() and path.is_dir() == b.is_dir
    assert path == registry.default_output(b, path.parent / "m", row.args, 32)
    assert [p.name for p in path.parent.iterdir()] == [path.name]            # no staging folder left
    assert sorted(p.name for p in row.source.parent.iterdir()) == ["m.pt", "out"]
    par = row.parity
    assert par["precision"] == row.precision
    ok, why = b.runtime_available()
    if not ok:
        assert par["status"] == "skipped" and par["reason"] == why
        return
    tol, min_agree = b.tolerance[row.precision]
    assert par["status"] == "passed" and par["decisive"] >= par["n"] // 2 and par["n"] >= 8, par
    assert par["top1_agreement_decisive"] >= min_agree and (tol is None or par["max_abs_diff"] <= tol), par


def test_reload_predicts_a_folder_like_the_source_and_reports_threads(row):
    row.need(runtime=True)
    b = row.backend
    src, m = YOLO(row.source), YOLO(row.path)
    assert m.format == b.name and m.names == src.names and m.imgsz == 32
    a, c = src(row.folder), m(row.folder, batch=3)   # batch 3: AutoBackend splits it for a fixed-batch artefact
    assert [r.path for r in a] == [r.path for r in c] and len(c) == len(list(row.folder.iterdir()))
    judge(b, row.precision, np.stack([r.probs.data for r in a]), np.stack([r.probs.data for r in c]))
    ab = m.backend()
    x = check_inputs(32, 5, seed=7)
    assert ab.run(x).shape == (5, 10)
    if ab.runner.device == "cpu":
        assert isinstance(ab.threads, int) and ab.threads >= 1, f"{b.name} runner reports threads={ab.threads!r}"


def test_metadata_round_trip_and_info(row, tmp_path, cli):
    row.need()
    b, path = row.backend, row.path
    meta = b.read_metadata(path)
    src = YOLO(row.source)
    assert meta["names"] == src.names and meta["imgsz"] == [32, 32] and meta["task"] == "classify"
    pp = src.preprocess or default_preprocess(32)      # the .pt's, in the artefact's layout
    assert meta["preprocess"] == {**pp, "layout": b.layout}
    assert meta["verification"]["precision"] == row.precision
    assert meta["verification"]["status"] == row.parity["status"]
    assert meta["verification"].get("max_abs_diff") == row.parity.get("max_abs_diff")
    if not b.is_source:                                # the .pt records no export args
        flags = {"half": row.precision == "fp16", "int8": row.precision == "int8"}
        assert {k: bool(meta["args"].get(k)) for k in set(b.args) & set(flags)} == \
            {k: flags[k] for k in set(b.args) & set(flags)}, meta["args"]

    copy = tmp_path / path.name                        # rewrite a copy: the row's artefact is shared
    (shutil.copytree if path.is_dir() else shutil.copy)(path, copy)
    b.write_metadata(copy, {**meta, "names": RENAMED})
    back = b.read_metadata(copy)
    assert back["names"] == RENAMED
    for key in ("imgsz", "task", "preprocess", "args", "verification", "batch"):
        assert back.get(key) == meta.get(key), key
    assert YOLO(copy).names == RENAMED
    if row.precision == "fp32" and b.runtime_available()[0]:   # the rewrite left the model itself as it was
        x = check_inputs(32, 3, seed=2)
        assert np.array_equal(YOLO(copy).backend().run(x), YOLO(path).backend().run(x))

    code, out, err = cli("info", path, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["format"] == b.name and doc["nc"] == 10 and doc["imgsz"] == 32
    assert {int(k): v for k, v in doc["names"].items()} == src.names


def test_the_format_is_recognised_and_graph_stats_answer(row, tmp_path):
    row.need()
    b, path = row.backend, row.path
    assert registry.for_path(path) is b
    if b.is_dir and b.content:                        # a folder whose name says nothing (``-o plain``)
        plain = tmp_path / "plain"
        shutil.copytree(path, plain)
        assert registry.for_path(plain) is b
    stats = b.graph_stats(path)
    if stats.get("params") is None:
        assert stats.get("gflops") is None and stats["stats_reason"].strip() and "\n" not in stats["stats_reason"]
    else:                                             # counted from the graph: the fused model's weights
        fused = sum(p.numel() for p in YOLO(row.source).model.fuse().parameters())
        assert abs(stats["params"] - fused) < 0.02 * fused and 0 <= stats["gflops"] < 0.1, (stats, fused)


def _spoil(path: Path, dest: Path, how: str) -> Path:
    """A copy of the artefact whose model bytes are cut in half (``truncated``) or random (``garbage``); a folder's
    metadata.yaml is kept so that the runtime itself meets the bad bytes."""
    (shutil.copytree if path.is_dir() else shutil.copy)(path, dest)
    rng = np.random.default_rng(0)
    for f in files_of(dest):
        if f.name == "metadata.yaml":
            continue
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2] if how == "truncated" else rng.bytes(max(len(data), 64)))
    return dest


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_bad_artefact_is_one_line(row, how, tmp_path, images):
    row.need()
    bad = _spoil(row.path, tmp_path / row.path.name, how)
    cmd = ["predict", "-m", str(bad), "-s", str(next(images.iterdir()))] if row.backend.runtime_available()[0] \
        else ["info", str(bad)]
    proc = subprocess.run([sys.executable, "-m", "yolo_export", *cmd, "--json"], capture_output=True, text=True,
                          errors="replace", timeout=300, cwd=tmp_path)
    assert proc.returncode == 1, f"exit {proc.returncode}: {proc.stdout[-500:]} {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["type"] in ERROR_TYPES - {"InternalError"}, doc
    assert "\n" not in doc["error"] and doc["error"].strip(), doc
    ours = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert ours == [f"error: {doc['error']}"], proc.stderr[-2000:]
