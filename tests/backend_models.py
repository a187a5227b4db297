"""Test models for the backend tests, and one export per format x precision shared by every test on a worker.

A tiny model whose outputs depend on its input (``condition``), for the parity checks.

A freshly initialised yolov8n-cls shrinks its activations layer after layer (about 1e-7 at the head at imgsz 32),
so every input gets the same, near-uniform probabilities and a parity check cannot fail. Here the BatchNorm
statistics are set from a pass over generated images (so each layer sees unit-scale activations, as after
training), and the classifier is centred and scaled so that different inputs get different, confident classes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

IMGSZ = 32
NAMES = [f"c{i}" for i in range(10)]


def condition(model, imgsz: int = IMGSZ, n: int = 64, seed: int = 0, logit_std: float = 4.0):
    import torch

    from yolo_export.data.samples import check_inputs

    x = torch.from_numpy(np.concatenate([check_inputs(imgsz, n // 2, seed=seed),
                                         check_inputs(imgsz, n - n // 2, seed=seed + 100)]))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model(x)
    for bn, mom in zip(bns, momenta):
        bn.momentum = mom
    model.eval()
    head = model.model[-1]
    with torch.no_grad():
        feats = head.pool(head.conv(_trunk(model, x))).flatten(1)
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(head.linear.weight.shape, generator=g)
        logits = (feats - feats.mean(0)) @ w.T
        w *= logit_std / float(logits.std())
        head.linear.weight.copy_(w)
        head.linear.bias.copy_(-(feats.mean(0) @ w.T))
    return model


def _trunk(model, x):
    for m in model.model[:-1]:
        x = m(x)
    return x


def conditioned_yolo(imgsz: int = IMGSZ):
    import torch

    from yolo_export import YOLO

    torch.manual_seed(0)
    y = YOLO("yolov8n-cls.yaml", names=NAMES)
    condition(y.model, imgsz)
    y.model.imgsz = imgsz
    return y


def save_conditioned(path, imgsz: int = IMGSZ):
    from yolo_export.nn.checkpoint import save_checkpoint

    save_checkpoint(path, conditioned_yolo(imgsz).model, half=False)
    return path


def torch_probs(pt, x: np.ndarray, fp16_weights: bool = False) -> np.ndarray:
    """Probabilities of the .pt model (fused, fp32 compute); ``fp16_weights``: weights rounded to fp16 first."""
    import torch

    from yolo_export import YOLO

    m = YOLO(pt).model.float().eval().fuse()
    with torch.no_grad():
        if fp16_weights:
            for p in m.parameters():
                p.copy_(p.half().float())
        return m(torch.from_numpy(x)).numpy()


def result_probs(results) -> np.ndarray:
    return np.stack([r.probs.data for r in results])


@pytest.fixture(scope="session")
def conditioned_master(tmp_path_factory):
    return save_conditioned(tmp_path_factory.mktemp("conditioned") / "cond.pt")


@pytest.fixture()
def cond_pt(conditioned_master, tmp_path):
    """A fresh copy of the conditioned checkpoint in this test's tmp dir (exports land beside it)."""
    import shutil

    dst = tmp_path / "cond.pt"
    shutil.copy(conditioned_master, dst)
    return dst


# ------------------------------------------------------------------------------------------ one export per row
@dataclass
class Row:
    """One format x precision exported (``path``), or why this machine goes no further (``skip``)."""

    backend: object
    precision: str
    source: Path                 # the .pt exported from
    folder: Path                 # images to predict, like the ones the source model was made for
    path: Path | None = None     # the artefact
    parity: dict | None = None
    args: dict | None = None
    skip: str | None = None
    log: list | None = None      # what the export logged

    def need(self, runtime: bool = False) -> None:
        if self.skip:
            pytest.skip(self.skip)
        if runtime:
            ok, why = self.backend.runtime_available()
            if not ok:
                pytest.skip(f"{self.backend.name} artefacts cannot run here: {why}")


_ROWS: dict[tuple[str, str], Row] = {}


def ci_extras() -> set[str]:
    """The extras ``.[all]`` installs (what CI has): one missing fails under CI=true instead of skipping."""
    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["all"]
    return {e.strip() for d in deps for e in d.split("[", 1)[1].split("]", 1)[0].split(",")}


def one_line(e: BaseException) -> str:
    """The message of one of the project's errors, checked to be one line."""
    from yolo_export.errors import YoloExportError

    msg = str(e)
    assert isinstance(e, YoloExportError), f"{type(e).__name__} escaped: {msg}"
    assert msg.strip() and "\n" not in msg.strip() and "Traceback" not in msg, msg
    return msg


@contextlib.contextmanager
def log_lines():
    """The messages yolo_export logs inside the block (INFO and up), as a list of strings."""
    import logging

    from yolo_export.utils import LOGGER

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler, old = Collect(logging.DEBUG), LOGGER.level
    LOGGER.addHandler(handler)
    LOGGER.setLevel(min(old or logging.INFO, logging.INFO))
    try:
        yield lines
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(old)


def export_kwargs(b, prec: str) -> dict:
    """fp32: the model's own inputs; fp16 / INT8: parity and calibration on digits images."""
    if prec == "fp32":
        return {}
    kw = {"data": "digits", "half": prec == "fp16", "int8": prec == "int8"}
    if prec == "int8" and "calib_images" in b.accepted_args():
        kw["calib_images"] = 32
    return kw


def make_row(b, prec: str, src: Path, folder: Path, base: Path) -> Row:
    """Export ``src`` (copied to ``base/m.pt``) into ``base/out/`` under its default name."""
    from yolo_export import YOLO
    from yolo_export.errors import ArgumentError, MissingDependency, NotAvailable

    row = Row(b, prec, base / "m.pt", folder)
    shutil.copy(src, row.source)
    out = base / "out"
    kw = export_kwargs(b, prec)
    try:
        row.args = b.resolve_args({"imgsz": None, **kw})
    except ArgumentError as e:           # e.g. fp16 TorchScript needs a CUDA device
        row.skip = f"{b.name} {prec} is refused on this machine: {one_line(e)}"
        return row
    y = YOLO(row.source)
    try:
        with log_lines() as row.log:
            row.path = Path(y.export(b.name, output=f"{out}/", **kw))
    except (MissingDependency, NotAvailable) as e:
        msg = one_line(e)
        assert not out.exists() or not any(out.iterdir()), f"half-written: {sorted(out.iterdir())}"
        missing = b.missing()
        if missing:
            assert f'pip install "yolo-export[{b.extra}]"' in msg, msg
            if os.environ.get("CI") and b.extra in ci_extras():
                pytest.fail(f"CI installs the '{b.extra}' extra, yet {missing} are missing: {msg}")
        row.skip = msg
        return row
    row.parity = y.last_export.parity
    return row


def exported_row(request, tmp_path_factory, fmt: str, prec: str = "fp32") -> Row:
    """The shared export of ``fmt`` x ``prec`` on this worker: fp32 from the conditioned model (predicting the
    ``images`` folder), fp16 / INT8 from the model trained on digits (predicting digits images)."""
    from yolo_export import registry

    key = (fmt, prec)
    if key not in _ROWS:
        b = registry.get(fmt)
        if prec == "fp32":
            src, folder = request.getfixturevalue("conditioned_master"), request.getfixturevalue("images")
        else:
            src, folder = request.getfixturevalue("trained_pt"), request.getfixturevalue("digits_images")
        _ROWS[key] = make_row(b, prec, src, folder, tmp_path_factory.mktemp(f"{fmt}-{prec}"))
    return _ROWS[key]
