"""The reference package's side of the cross-check tests (tests/test_reference.py). Runs inside the reference venv
(.ci/make_ref_venv.sh), never in the project's venv; offline, with its auto-install, hub, sync and plots off.

Subcommands write their results under --out as .npy arrays and one result.json:
  train_export  train a tiny cls model on a digits ImageFolder and export it to the given formats
  predict       the reference's predictions (probabilities, top-1 names) of artefacts on a saved input batch
  yaml_logits   a model built from a YAML with seeded weights: its state dict, an input and the logits
  jpegs         the reference's predict input tensors and probabilities for JPEG files through one artefact
  serve         timed predict / train requests from stdin (benchmarks/vs_reference.py)
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path


def _refuse_runtime_installs() -> None:
    """Nothing here may install a package: the reference's auto-install is off (YOLO_AUTOINSTALL), and a ``pip`` /
    ``uv`` that refuses comes first on PATH for libraries that shell out to one anyway (the MNN wheel's converter runs
    ``pip install -U aliyun-log-python-sdk`` for its telemetry when it is imported)."""
    stub = Path(tempfile.mkdtemp(prefix="ref-no-install-"))
    for name in ("pip", "pip3", "uv"):
        f = stub / name
        f.write_text("#!/bin/sh\necho \"refused: no package installs while cross-checking ($0 $*)\" >&2\nexit 1\n")
        f.chmod(0o755)
    os.environ["PATH"] = f"{stub}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["PIP_NO_INDEX"] = "1"


_refuse_runtime_installs()
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "0"
os.environ.setdefault("YOLO_VERBOSE", "0")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ref-cfg-"))
_TEMP = [Path(os.environ["PATH"].split(os.pathsep)[0]), Path(os.environ["YOLO_CONFIG_DIR"])]
atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _TEMP if d.name.startswith("ref-")])

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ultralytics import YOLO  # noqa: E402
from ultralytics.utils import SETTINGS  # noqa: E402

SETTINGS.update({k: False for k in ("sync", "hub", "wandb", "tensorboard", "mlflow", "clearml", "comet", "dvc",
                                    "raytune", "neptune") if k in SETTINGS})
QUIET = {"verbose": False}


def _predict(model, x: np.ndarray, imgsz: int) -> tuple[np.ndarray, list[str]]:
    """Probabilities (N, nc) and top-1 names of the reference's predict on each image of an NCHW [0, 1] batch."""
    probs, top1 = [], []
    for i in range(len(x)):
        r = model.predict(torch.from_numpy(x[i:i + 1]), imgsz=imgsz, device="cpu", **QUIET)[0]
        p = r.probs.data.float().cpu().numpy()
        probs.append(p)
        top1.append(r.names[int(p.argmax())])
    return np.stack(probs), top1


def train_export(a) -> dict:
    out = Path(a.out)
    torch.manual_seed(0)
    model = YOLO("yolov8n-cls.yaml")
    model.train(data=a.data, epochs=a.epochs, imgsz=a.imgsz, batch=64, workers=0, device="cpu", plots=False,
                project=str(out), name="train", exist_ok=True, seed=0, deterministic=True, amp=False, **QUIET)
    best = out / "train" / "weights" / "best.pt"
    res = {"pt": str(best), "artefacts": {}, "errors": {}}
    x = np.load(a.inputs)
    ref = YOLO(str(best))
    probs, top1 = _predict(ref, x, a.imgsz)
    np.save(out / "probs_pt.npy", probs)
    res.update(names={int(k): v for k, v in ref.names.items()}, top1=top1, imgsz=a.imgsz)
    jobs = [(f, None) for f in a.formats.split(",") if f]
    jobs += [(f, 16) for f in a.half.split(",") if f]
    for fmt, q in jobs:
        key = f"{fmt}-fp16" if q else fmt
        try:
            kw = {"quantize": 16} if q else {}
            path = Path(YOLO(str(best)).export(format=fmt, imgsz=a.imgsz, device="cpu", **kw, **QUIET))
            dst = out / "exports" / key / path.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), dst)
            res["artefacts"][key] = str(dst)
        except Exception as e:  # noqa: BLE001 - recorded and reported by the test
            res["errors"][key] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    if a.big_imgsz:  # the same model exported at a photo-sized input, for the JPEG preprocessing check
        path = Path(YOLO(str(best)).export(format="onnx", imgsz=a.big_imgsz, device="cpu", **QUIET))
        dst = out / "exports" / f"onnx-{a.big_imgsz}" / path.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), dst)
        res["artefacts"][f"onnx-{a.big_imgsz}"] = str(dst)
    return res


def predict(a) -> dict:
    x = np.load(a.inputs)
    res = {"results": {}, "errors": {}}
    for i, path in enumerate(a.models):
        try:
            model = YOLO(path, task="classify")
            probs, top1 = _predict(model, x, a.imgsz)
            np.save(Path(a.out) / f"probs_{i}.npy", probs)
            res["results"][path] = {"probs": str(Path(a.out) / f"probs_{i}.npy"), "top1": top1,
                                    "names": {int(k): v for k, v in model.names.items()}}
        except Exception as e:  # noqa: BLE001
            res["errors"][path] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    return res


def yaml_logits(a) -> dict:
    from ultralytics.nn.tasks import ClassificationModel

    out = Path(a.out)
    torch.manual_seed(a.seed)
    m = ClassificationModel(a.cfg, nc=a.nc, verbose=False)
    with torch.no_grad():  # trained-like statistics, so the comparison is not between near-constant outputs
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.8, 1.2)
                mod.bias.uniform_(-0.1, 0.1)
    m.eval()
    x = torch.rand(2, 3, a.imgsz, a.imgsz, generator=torch.Generator().manual_seed(a.seed))
    with torch.no_grad():
        y = m(x)
    logits = y[1] if isinstance(y, (tuple, list)) else y
    torch.save({k: v.detach().clone() for k, v in m.state_dict().items()}, out / "state_dict.pt")
    np.save(out / "x.npy", x.numpy())
    np.save(out / "logits.npy", logits.numpy())
    bn = next(mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d))
    return {"bn_eps": bn.eps, "bn_momentum": bn.momentum}


def jpegs(a) -> dict:
    from ultralytics.utils.patches import imread

    out = Path(a.out)
    model = YOLO(a.model, task="classify")
    tensors, probs = [], []
    for p in a.images:
        r = model.predict(p, imgsz=a.imgsz, device="cpu", **QUIET)[0]
        probs.append(r.probs.data.float().cpu().numpy())
        tensors.append(model.predictor.preprocess([imread(p)])[0].float().cpu().numpy())
    np.save(out / "tensors.npy", np.stack(tensors))
    np.save(out / "probs.npy", np.stack(probs))
    return {"n": len(tensors)}


def serve(a) -> dict:
    """Timed work on request, for benchmarks/vs_reference.py: one JSON request a line on stdin, one
    ``@@result {...}`` line on stdout per request (the reference's own log lines may come between)."""
    import time

    models = {}
    for line in sys.stdin:
        req = json.loads(line)
        t0 = time.perf_counter()
        if req["cmd"] == "predict":
            if req["model"] not in models:
                models[req["model"]] = YOLO(req["model"], task="classify")
            for p in req["images"]:
                models[req["model"]].predict(p, imgsz=req["imgsz"], device="cpu", **QUIET)
        elif req["cmd"] == "train":
            YOLO(req["cfg"]).train(data=req["data"], epochs=req["epochs"], imgsz=req["imgsz"], batch=req["batch"],
                                   workers=0, device="cpu", plots=False, project=req["project"], name="train",
                                   exist_ok=True, seed=0, amp=False, **QUIET)
        elif req["cmd"] == "quit":
            break
        print("@@result " + json.dumps({"s": time.perf_counter() - t0}), flush=True)
    return {}


# Each command's arguments: (name, type, default); REQUIRED for a required option, MANY for a positional list.
REQUIRED, MANY = object(), object()
COMMANDS = {
    "train_export": [("--data", str, REQUIRED), ("--inputs", str, REQUIRED), ("--epochs", int, 1), ("--imgsz", int, 32),
                     ("--formats", str, "torchscript,onnx,openvino"), ("--half", str, ""), ("--big-imgsz", int, 0)],
    "predict": [("--inputs", str, REQUIRED), ("--imgsz", int, 32), ("models", str, MANY)],
    "yaml_logits": [("--cfg", str, REQUIRED), ("--nc", int, 10), ("--imgsz", int, 64), ("--seed", int, 0)],
    "jpegs": [("--model", str, REQUIRED), ("--imgsz", int, 224), ("images", str, MANY)],
    "serve": [],
}


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd, spec in COMMANDS.items():
        s = sub.add_parser(cmd)
        for name, typ, default in [*spec, ("--out", str, REQUIRED)]:
            if default is MANY:
                s.add_argument(name, nargs="+")
            elif default is REQUIRED:
                s.add_argument(name, type=typ, required=True)
            else:
                s.add_argument(name, type=typ, default=default)
    a = ap.parse_args()
    Path(a.out).mkdir(parents=True, exist_ok=True)
    try:
        res = {"train_export": train_export, "predict": predict, "yaml_logits": yaml_logits, "jpegs": jpegs,
               "serve": serve}[a.cmd](a)
    except Exception:  # noqa: BLE001 - the test prints it
        traceback.print_exc()
        return 1
    (Path(a.out) / "result.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
