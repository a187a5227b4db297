"""PaddlePaddle via x2paddle: fp32 export, run with paddle.inference and compared with PyTorch; safe after TF."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from backend_models import cond_pt, conditioned_master, result_probs, torch_probs  # noqa: F401
from conftest import has, needs
from yolo_export import YOLO, registry
from yolo_export.errors import ArgumentError, MissingDependency
from yolo_export.verify import check_inputs

paddle_only = needs("paddle", "x2paddle", "six", "requests", extra="paddle")


@paddle_only
def test_paddle_fp32_parity_predict_and_metadata(cond_pt, images):  # noqa: F811
    import yaml

    y = YOLO(cond_pt)
    path = Path(y.export("paddle"))
    assert path.name == "cond_paddle_model"
    assert {p.name for p in path.iterdir()} == {"model.json", "model.pdiparams", "metadata.yaml"}
    assert not [p for p in cond_pt.parent.iterdir() if ".tmp-" in p.name]
    assert not [p for p in sys.path if "x2paddle" in p]  # x2paddle's sys.path insert is undone
    par = y.last_export.parity
    assert par["status"] == "passed" and par["decisive"] == par["n"] == 8
    assert par["max_abs_diff"] <= 1e-4 and par["top1_agreement"] == 1.0

    pd = YOLO(path)
    assert pd.format == "paddle" and pd.names == y.names and pd.imgsz == 32
    ab = pd.backend()
    assert ab.dynamic and ab.fixed_batch is None
    x = check_inputs(32, 5, seed=5)
    assert np.abs(ab.runner(x) - torch_probs(cond_pt, x)).max() <= 1e-4  # one predictor call, batch 5
    a, b = y(images), pd(images, batch=4)
    assert [r.probs.top1 for r in a] == [r.probs.top1 for r in b]
    assert np.abs(result_probs(a) - result_probs(b)).max() <= 1e-4

    meta = yaml.safe_load((path / "metadata.yaml").read_text())
    assert meta["names"][9] == "c9" and meta["imgsz"] == [32, 32] and meta["preprocess"]["resize"] == 32
    assert pd.metadata["verification"]["max_abs_diff"] == par["max_abs_diff"]


SCRIPT = """
import sys
import {first}  # loaded before paddle: a plain `import paddle` would now segfault
from yolo_export import YOLO
y = YOLO(sys.argv[1])
path = y.export("paddle")
par = y.last_export.parity
import numpy as np
from yolo_export.verify import check_inputs
out = YOLO(path).backend().run(check_inputs(32, 3))
print("OK", par["status"], par["max_abs_diff"], out.shape, "{first}" in sys.modules, flush=True)
"""


@paddle_only
@pytest.mark.skipif(not has("tensorflow"), reason="needs tensorflow to check the import clash")
def test_paddle_export_and_run_after_tensorflow_in_one_process(cond_pt):  # noqa: F811
    code = textwrap.dedent(SCRIPT).format(first="tensorflow")
    proc = subprocess.run([sys.executable, "-c", code, str(cond_pt)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    line = [s for s in proc.stdout.splitlines() if s.startswith("OK")][-1].split()
    assert line[1] == "passed" and float(line[2]) <= 1e-4 and line[-1] == "True"


def test_paddle_refuses_bad_arguments(pt_copy):
    y = YOLO(pt_copy)
    for kw, flag in (({"half": True}, "--half"), ({"int8": True}, "--int8"), ({"dynamic": True}, "--dynamic")):
        with pytest.raises(ArgumentError, match=f"does not take {flag}"):
            y.export("paddle", **kw)
    assert not list(pt_copy.parent.glob("*paddle*"))


@pytest.mark.skipif(has("paddle", "x2paddle", "six", "requests"), reason="the paddle extra is installed")
def test_paddle_missing_extra_is_one_line(pt_copy):
    with pytest.raises(MissingDependency) as e:
        YOLO(pt_copy).export("paddle")
    assert 'pip install "yolo-export[paddle]"' in str(e.value) and "\n" not in str(e.value)


def test_paddle_backend_declaration():
    b = registry.get("paddle")
    assert b.is_dir and b.suffix == "_paddle_model" and b.extra == "paddle" and not b.args
    assert {"six", "requests"} <= set(b.requires)
