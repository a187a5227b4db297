"""PaddlePaddle, what only it has: the x2paddle file set, a whole batch in one predictor call, safe after TensorFlow.
Export, parity, reload, predict and metadata: ``test_contract.py``."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from backend_models import torch_probs
from conftest import has, needs
from yolo_export import YOLO, registry
from yolo_export.errors import ArgumentError
from yolo_export.data.samples import check_inputs

pytestmark = pytest.mark.xdist_group("paddle")   # the contract test's exports of paddle, on the same worker

paddle_only = needs("paddle", "x2paddle", "six", "requests", extra="paddle")


@paddle_only
def test_paddle_files_and_a_whole_batch_in_one_predictor_call(exported):
    row = exported("paddle")
    row.need()
    assert {p.name for p in row.path.iterdir()} == {"model.json", "model.pdiparams", "metadata.yaml"}
    assert not [p for p in sys.path if "x2paddle" in p]  # x2paddle's sys.path insert is undone
    ab = YOLO(row.path).backend()
    assert ab.dynamic and ab.fixed_batch is None
    x = check_inputs(32, 5, seed=5)
    assert np.abs(ab.runner(x) - torch_probs(row.source, x)).max() <= 1e-4  # one predictor call, batch 5


SCRIPT = """
import sys
import {first}  # loaded before paddle: a plain `import paddle` would now segfault
from yolo_export import YOLO
y = YOLO(sys.argv[1])
path = y.export("paddle")
par = y.last_export.parity
import numpy as np
from yolo_export.data.samples import check_inputs
out = YOLO(path).backend().run(check_inputs(32, 3))
print("OK", par["status"], par["max_abs_diff"], out.shape, "{first}" in sys.modules, flush=True)
"""


@paddle_only
@pytest.mark.skipif(not has("tensorflow"), reason="needs tensorflow to check the import clash")
def test_paddle_export_and_run_after_tensorflow_in_one_process(cond_pt):
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


def test_paddle_backend_declaration():
    b = registry.get("paddle")
    assert b.is_dir and b.suffix == "_paddle_model" and b.extra == "paddle" and not b.args
    assert {"six", "requests"} <= set(b.requires)
