"""Shared fixtures. Test models are generated here (tiny image sizes, small models); no weights are committed."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from backend_models import cond_pt, conditioned_master  # noqa: F401 - fixtures for every test file

IMGSZ = 32
NAMES = [f"c{i}" for i in range(10)]


def pytest_addoption(parser):
    parser.addoption("--backends-of", default=None, metavar="EXTRA,...",
                     help="test_contract.py: only the formats of these pip extras ('core': those that need none)")


def pytest_configure(config):
    config.addinivalue_line("markers", "xdist_group(name): run these tests on one xdist worker (--dist loadgroup)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup`` a test without an ``xdist_group`` joins its file's group, as ``--dist loadfile``
    kept it: a file's module-scoped fixtures (one export, one conversion) are built on one worker. Only the contract
    test groups differently (per backend module), so that its families run in parallel."""
    if getattr(config.option, "dist", "no") != "loadgroup":
        return
    for item in items:
        if not any(item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


def has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def needs(*modules: str, extra: str):
    """Skip marker for a backend library that is not installed (CI installs every extra that installs)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs the '{extra}' extra ({', '.join(missing)} not installed)")


def sharpen(model, seed: int = 0, imgsz: int = 32):
    """Make a random-init model behave like a trained one numerically (see ``backend_models.condition``): at init,
    BatchNorm's running statistics do not match the activations, which shrink layer by layer until every class gets
    the same probability to 1e-7, so top-1 agreement would be a coin toss and max-abs-diff checks meaningless."""
    from backend_models import condition

    return condition(model, imgsz, seed=seed)


@pytest.fixture(scope="session")
def tiny_yolo():
    """A YOLO facade over a yolov8n-cls with 10 classes, imgsz 32, with a confident head."""
    import torch

    from yolo_export import YOLO

    torch.manual_seed(0)
    y = YOLO("yolov8n-cls.yaml", names=NAMES)
    sharpen(y.model)
    y.model.imgsz = IMGSZ
    return y


@pytest.fixture(scope="session")
def tiny_pt(tiny_yolo, tmp_path_factory) -> Path:
    """The tiny model saved as our .pt checkpoint (fp32 so that parity is exact)."""
    from yolo_export.nn.checkpoint import save_checkpoint

    p = tmp_path_factory.mktemp("pt") / "tiny.pt"
    save_checkpoint(p, tiny_yolo.model, half=False)
    return p


@pytest.fixture()
def pt_copy(tiny_pt, tmp_path) -> Path:
    """A fresh copy of the tiny checkpoint in this test's own tmp dir (exports land beside it)."""
    dst = tmp_path / "tiny.pt"
    shutil.copy(tiny_pt, dst)
    return dst


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Path:
    """A folder of small real-looking RGB images (JPEG and PNG) of varied sizes."""
    from PIL import Image

    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(64, 48), (40, 80), (100, 100), (33, 57)]):
        yy, xx = np.mgrid[0:h, 0:w]
        arr = np.stack([(xx * (i + 1) * 3) % 256, (yy * 5 + i * 40) % 256, rng.integers(0, 256, (h, w))], -1)
        Image.fromarray(arr.astype(np.uint8)).save(d / f"img{i}.{'jpg' if i % 2 == 0 else 'png'}")
    return d


@pytest.fixture()
def cli():
    """Run the click CLI in-process; returns (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    from yolo_export.cli import main

    def run(*args):
        runner = CliRunner()
        res = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        return res.exit_code, res.stdout, res.stderr

    return run


def python_exe() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def trained_pt(tmp_path_factory) -> Path:
    """A yolov8n-cls really trained on the built-in digits (8 epochs, imgsz 32: val top-1 ~0.97, ~25 s).

    INT8 and fp16 checks need a trained model: an untrained one has no margins to keep. Trained once per test
    run and shared between xdist workers through a file lock in the run's common temp dir.
    """
    import fcntl

    from yolo_export import YOLO

    root = tmp_path_factory.getbasetemp()
    shared = root.parent if root.name.startswith("popen-gw") else root
    out = shared / "trained-digits" / "t" / "weights" / "best.pt"
    with open(shared / "trained-digits.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.exists():
            YOLO("yolov8n-cls.yaml").train(data="digits", epochs=8, imgsz=32, batch=64, workers=0, threads=1, seed=0,
                                           project=str(shared / "trained-digits"), name="t", exist_ok=True,
                                           progress=False, plots=False)
        fcntl.flock(lock, fcntl.LOCK_UN)
    return out


@pytest.fixture(scope="session")
def digits_images(tmp_path_factory) -> Path:
    """Six val images of the built-in digits (what ``trained_pt`` knows)."""
    from yolo_export.data.datasets import resolve_dataset

    d = tmp_path_factory.mktemp("digits-images")
    for i, p in enumerate(sorted((resolve_dataset("digits") / "val").rglob("*.png"))[::60][:6]):
        shutil.copy(p, d / f"{i}_{p.name}")
    return d


@pytest.fixture()
def exported(request, tmp_path_factory):
    """``exported(fmt, prec)`` -> the ``backend_models.Row`` of that export, made once per worker and shared by the
    contract test and the format's own tests (same ``xdist_group``: the backend's module name)."""
    from backend_models import exported_row

    return lambda fmt, prec="fp32": exported_row(request, tmp_path_factory, fmt, prec)


@pytest.fixture()
def logs():
    """The messages yolo_export logs during the test (INFO and up), as a list of strings."""
    from backend_models import log_lines

    with log_lines() as lines:
        yield lines
