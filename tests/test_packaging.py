"""The wheel: backends ship under yolo_export.backends (no top-level 'backends'), data files included, and the
unpacked wheel imports and exports the same as the editable install."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                        "-w", str(out), "-q"], capture_output=True, text=True, cwd=build)
    assert r.returncode == 0, r.stderr[-2000:]
    return next(out.glob("yolo_export-*.whl"))


def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.startswith("backends/") for n in names), "a top-level 'backends' package would be installed"
    for must in ("yolo_export/backends/onnx.py", "yolo_export/backends/torchscript.py",
                 "yolo_export/cfg/yolov8-cls.yaml", "yolo_export/cli.py", "yolo_export/serve_page.html"):
        assert must in names, must
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert entry and "yexport = yolo_export.cli:main" in zipfile.ZipFile(wheel).read(entry[0]).decode()


def test_unpacked_wheel_works_like_editable(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import yolo_export, yolo_export.backends.torchscript as t, sys;"
            "assert yolo_export.__file__.startswith(sys.argv[1]), yolo_export.__file__;"
            "from yolo_export import YOLO, registry;"
            "assert 'torchscript' in registry.names();"
            "y = YOLO('yolov8n-cls.yaml', nc=3);"
            "p = y.export('torchscript', imgsz=32, output=sys.argv[1] + '/m.torchscript');"
            "print(YOLO(p).names)")
    r = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True,
                       env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "{0: 'class0', 1: 'class1', 2: 'class2'}" in r.stdout
