"""Cross-checks against the reference package itself, run in its own venv (``.ci/make_ref_venv.sh``) through a
subprocess (``tests/reference/ref_side.py``). Parity against our own ``.pt`` cannot see a defect both sides share;
these compare with the reference's answers:

- the reference trains a tiny classifier on digits (32 px) and exports it; each artefact loads here with names, input
  size, task and preprocessing from the reference's own metadata carriers and gives its probabilities;
- the reference loads our ONNX / TorchScript / OpenVINO exports (of a model of ours and of its own checkpoint) and
  predicts the same top-1 with the class names from our metadata;
- the same YAML and state dict give the same logits here and there;
- the same reference-exported ONNX predicts the same photo-sized JPEGs with identical input tensors.

``YOLO_EXPORT_REF_PYTHON`` names the reference venv's python (``.ci/run`` sets it). Without it the tests skip, except
in CI (``CI`` set), where a missing reference venv fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import has

HERE = Path(__file__).parent
REF_SIDE = HERE / "reference" / "ref_side.py"
IMGSZ = 32
N_INPUTS = 32
FP32_TOL, FP16_TOL = 1e-4, 1e-2
# Formats the reference exports offline here, and the module our runtime for each needs.
FORMATS = {"torchscript": "torch", "onnx": "onnxruntime", "openvino": "openvino", "ncnn": "ncnn", "mnn": "MNN",
           "paddle": "paddle"}
HALF = ("onnx", "openvino", "ncnn", "mnn")  # those it makes in fp16 on CPU
META_ONLY = {"coreml": "coremltools"}  # exported and read here; running it needs macOS


def _ref_python() -> str:
    exe = os.environ.get("YOLO_EXPORT_REF_PYTHON")
    if exe and Path(exe).exists():
        return exe
    why = ("YOLO_EXPORT_REF_PYTHON is not set" if not exe else f"YOLO_EXPORT_REF_PYTHON={exe} does not exist") + \
        " (make the reference venv with .ci/make_ref_venv.sh)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the reference cross-checks: {why}")
    pytest.skip(why)


def ref(cmd: str, out: Path, *args: str, timeout: int = 600) -> dict:
    """Run one ref_side.py subcommand in the reference venv; its result.json."""
    p = subprocess.run([_ref_python(), str(REF_SIDE), cmd, "--out", str(out), *map(str, args)],
                       capture_output=True, text=True, timeout=timeout, cwd=out)
    if p.returncode != 0:
        pytest.fail(f"reference side '{cmd}' failed (rc {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return json.loads((out / "result.json").read_text())


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    _ref_python()
    return tmp_path_factory.mktemp("reference")


@pytest.fixture(scope="module")
def digits(work) -> tuple[Path, np.ndarray]:
    """scikit-learn's digits upscaled to 32 px as an RGB ImageFolder (val: i % 5 == 0), and a batch of val images."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    root = work / "digits32"
    imgs = np.clip(np.rint(d.images * (255 / 16)), 0, 255).astype(np.uint8)
    xs = []
    for i, (img, label) in enumerate(zip(imgs, d.target)):
        split = "val" if i % 5 == 0 else "train"
        (root / split / str(label)).mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(img, "L").resize((IMGSZ, IMGSZ), Image.Resampling.BILINEAR).convert("RGB")
        im.save(root / split / str(label) / f"{i:04d}.png")
        if split == "val" and len(xs) < N_INPUTS:
            xs.append(np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255)
    x = np.stack(xs)
    np.save(work / "inputs.npy", x)
    return root, x


@pytest.fixture(scope="module")
def trained(work, digits) -> dict:
    """The reference trains (2 epochs, no warm-up so the model separates the classes) and exports."""
    root, _ = digits
    out = work / "ref"
    out.mkdir()
    res = ref("train_export", out, "--data", root, "--inputs", work / "inputs.npy", "--epochs", 2,
              "--formats", ",".join([*FORMATS, *META_ONLY]), "--half", ",".join(HALF), "--big-imgsz", 224)
    res["probs"] = np.load(out / "probs_pt.npy")
    return res


def _parity(p: np.ndarray, q: np.ndarray) -> tuple[float, int]:
    return float(np.abs(p - q).max()), int((p.argmax(1) == q.argmax(1)).sum())


# --------------------------------------------------------------------------------------------- its artefacts here
def _their_artefact(trained, key: str, module: str):
    """The reference's export ``key`` loaded here, with its names, input size and task (skips without ``module``)."""
    from yolo_export import YOLO

    if not has(module):
        pytest.skip(f"{module} is not installed here (its extra)")
    assert key in trained["artefacts"], f"the reference did not export {key}: {trained['errors'].get(key)}"
    y = YOLO(trained["artefacts"][key])
    assert y.names == {int(k): v for k, v in trained["names"].items()}
    assert y.imgsz == IMGSZ and y.metadata.get("task") == "classify"
    return y


@pytest.mark.parametrize("key", [*FORMATS, *(f"{f}-fp16" for f in HALF)])
def test_reference_artefact_loads_here(trained, digits, key):
    from yolo_export.data.transforms import default_preprocess

    y = _their_artefact(trained, key, FORMATS[key.removesuffix("-fp16")])
    assert y.preprocess == default_preprocess(IMGSZ)
    p = y.backend()(digits[1])
    ref_p = trained["probs"]
    dp, same = _parity(p, ref_p)
    print(f"reference {key} loaded here: max|dp| {dp:.2e}, top-1 equal {same}/{len(p)}")
    if key.endswith("-fp16"):
        top2 = np.sort(ref_p, 1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 2 * FP16_TOL
        assert dp <= FP16_TOL and (p.argmax(1) == ref_p.argmax(1))[clear].all()
    else:
        assert dp <= FP32_TOL and same == len(p)


def test_reference_checkpoint_imports_here(trained, digits):
    from yolo_export import YOLO

    y = YOLO(trained["pt"])
    assert y.names == {int(k): v for k, v in trained["names"].items()}
    p = y.backend()(digits[1])
    dp, same = _parity(p, trained["probs"])
    print(f"reference .pt imported here: max|dp| {dp:.2e}, top-1 equal {same}/{len(p)}")
    assert dp <= FP32_TOL and same == len(p)


@pytest.mark.parametrize("fmt", META_ONLY)
def test_reference_artefact_metadata_here(trained, fmt):
    """Formats that do not run on this OS: the reference's artefact still gives its names, size and task here."""
    _their_artefact(trained, fmt, META_ONLY[fmt])


def test_reference_carriers_of_formats_it_cannot_export_here(trained, tmp_path):
    """TFLite and TensorRT artefacts of the reference, laid out byte for byte as its exporter writes them (it needs
    the LiteRT converter / an NVIDIA GPU for the models themselves), around its real metadata dict (the one it saved
    beside its OpenVINO export): names, input size and task come from its carriers."""
    import yaml

    from yolo_export import YOLO

    meta = yaml.safe_load((Path(trained["artefacts"]["openvino"]) / "metadata.yaml").read_text())
    assert meta["author"] != "yolo-export"
    tfl = tmp_path / "best.tflite"  # its exporter: ZipFile(file, "a", ZIP_DEFLATED).writestr("metadata.json", ...)
    tfl.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    import zipfile

    with zipfile.ZipFile(tfl, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", json.dumps(meta, indent=2))
    eng = tmp_path / "best.engine"  # its exporter: len(meta).to_bytes(4, "little", signed=True), meta, engine bytes
    text = json.dumps(meta)
    eng.write_bytes(len(text).to_bytes(4, byteorder="little", signed=True) + text.encode() + bytes(64))
    for path in (tfl, eng):
        m = YOLO(path).metadata
        assert m["names"] == {int(k): v for k, v in trained["names"].items()}, path.name
        assert m["imgsz"] == [IMGSZ, IMGSZ] and m["task"] == "classify", path.name


def test_reference_trained_a_model_that_separates_classes(trained):
    """Guards the fixture: a model that predicts one class for everything would make the parity checks weak."""
    assert len(set(trained["top1"])) >= 3, trained["top1"]


@pytest.mark.skipif(not has("onnx", "onnxruntime"), reason="needs the 'onnx' extra")
def test_artefact_without_metadata_names_the_override(pt_copy, tmp_path):
    """An artefact that carries no names / input size: one line saying so and how to supply them; supplied, it runs
    as the same file with metadata does. (Needs no reference venv: any ONNX file stripped of its metadata.)"""
    import onnx
    from click.testing import CliRunner
    from PIL import Image

    from yolo_export import YOLO
    from yolo_export.cli import main
    from yolo_export.errors import YoloExportError

    full = YOLO(pt_copy).export(format="onnx", verify=False)
    bare = tmp_path / "bare.onnx"
    m = onnx.load(full)
    del m.metadata_props[:]
    onnx.save(m, bare)
    with pytest.raises(YoloExportError, match=r"carries no names or imgsz in its metadata; supply them.*names="):
        YOLO(bare).backend()
    names = [f"d{i}" for i in range(10)]
    x = np.random.default_rng(0).random((4, 3, IMGSZ, IMGSZ), dtype=np.float32)
    y = YOLO(bare, names=names, imgsz=IMGSZ)
    assert y.names[3] == "d3" and y.imgsz == IMGSZ
    assert np.array_equal(y.backend()(x), YOLO(full).backend()(x))
    img = tmp_path / "one.png"
    Image.fromarray((x[0].transpose(1, 2, 0) * 255).astype(np.uint8)).save(img)
    r = CliRunner().invoke(main, ["predict", "-m", str(bare), "-s", str(img)])
    assert r.exit_code != 0 and "carries no names or imgsz" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    r = CliRunner().invoke(main, ["predict", "-m", str(bare), "-s", str(img), "--names", ",".join(names),
                                  "--imgsz", str(IMGSZ), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["name"].startswith("d")
    r = CliRunner().invoke(main, ["predict", "-m", str(pt_copy), "-s", str(img), "--names", "a,b"])
    assert r.exit_code != 0 and "--names applies to exported artefacts" in r.output


# --------------------------------------------------------------------------------------------- ours there
REVERSE = ("onnx", "torchscript", "openvino")


@pytest.fixture(scope="module")
def reverse(work, trained, digits, tiny_pt) -> dict:
    """Our exports of a model of ours and of the reference's checkpoint, predicted by the reference."""
    from yolo_export import YOLO

    x = digits[1]
    cases = {}
    for src, pt in (("ours", tiny_pt), ("theirs", Path(trained["pt"]))):
        d = work / f"reverse-{src}"
        d.mkdir()
        local = d / f"{src}.pt"
        shutil.copy(pt, local)
        y = YOLO(local)
        expected = trained["probs"] if src == "theirs" else y.backend()(x)
        for fmt in REVERSE:
            cases[(src, fmt)] = {"path": YOLO(local).export(format=fmt), "expected": expected, "names": y.names}
    out = work / "reverse-ref"
    out.mkdir()
    res = ref("predict", out, "--inputs", work / "inputs.npy", "--imgsz", IMGSZ,
              *(c["path"] for c in cases.values()))
    for c in cases.values():
        c["error"] = res["errors"].get(c["path"])
        got = res["results"].get(c["path"])
        if got:
            c.update(ref_probs=np.load(got["probs"]), ref_names=got["names"], ref_top1=got["top1"])
    return cases


@pytest.mark.parametrize("src", ["ours", "theirs"])
@pytest.mark.parametrize("fmt", REVERSE)
def test_reference_loads_our_export(reverse, src, fmt):
    c = reverse[(src, fmt)]
    assert c["error"] is None, f"the reference could not run our {fmt}: {c['error']}"
    assert {int(k): v for k, v in c["ref_names"].items()} == c["names"]
    p, e = c["ref_probs"], c["expected"]
    dp, same = _parity(p, e)
    print(f"our {fmt} export of {src} model run by the reference: max|dp| {dp:.2e}, top-1 equal {same}/{len(p)}")
    assert c["ref_top1"] == [c["names"][int(i)] for i in p.argmax(1)]
    if fmt == "openvino":  # the reference runs OpenVINO in bf16 on this CPU: judge on clear top-2 margins
        top2 = np.sort(e, 1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 0.1
        assert clear.sum() >= len(e) // 4, "too few images with a clear margin to judge"
        assert (p.argmax(1) == e.argmax(1))[clear].all()
    else:
        # Our test model's head is scaled up to make confident, input-dependent classes (backend_models.condition),
        # which magnifies float rounding between the two torch / runtime builds (measured up to 8e-5 here); the
        # reference-trained model is judged at the fp32 tolerance.
        assert dp <= (FP32_TOL if src == "theirs" else 1e-3) and same == len(p)


# --------------------------------------------------------------------------------------------- same YAML, same model
@pytest.fixture(scope="module")
def yaml_pairs(work) -> dict:
    out = {}
    for scale in ("n", "s"):
        d = work / f"yaml-{scale}"
        d.mkdir()
        out[scale] = (d, ref("yaml_logits", d, "--cfg", f"yolov8{scale}-cls.yaml", "--nc", 10, "--imgsz", 64))
    return out


@pytest.mark.parametrize("scale", ["n", "s"])
def test_same_yaml_same_logits(yaml_pairs, scale):
    import torch

    from yolo_export.nn.model import ClassificationModel

    d, info = yaml_pairs[scale]
    sd = torch.load(d / "state_dict.pt", weights_only=True)
    m = ClassificationModel(f"yolov8{scale}-cls.yaml", nc=10)
    m.load_state_dict(sd, strict=True)
    m.eval()
    logits = {}
    m.model[-1].linear.register_forward_hook(lambda mod, i, o: logits.setdefault("y", o))
    with torch.no_grad():
        m(torch.from_numpy(np.load(d / "x.npy")))
    diff = float((logits["y"] - torch.from_numpy(np.load(d / "logits.npy"))).abs().max())
    print(f"yolov8{scale}-cls.yaml: max|d logits| {diff:.2e} (reference BN eps {info['bn_eps']})")
    assert diff <= 1e-5


# --------------------------------------------------------------------------------------------- photo-sized JPEGs
JPEG_SIZES = [(640, 480), (1920, 1080), (480, 640), (333, 500)]


def _photo_like(w: int, h: int, seed: int, digit: np.ndarray) -> np.ndarray:
    """Smooth gradients, a large upscaled digit, texture and sensor noise: JPEG content with real edges."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w * 180 + 40, yy / h * 160 + 50, (xx + yy) / (w + h) * 200 + 30], -1)
    base += 30 * np.sin(xx / (17 + seed))[..., None] * np.cos(yy / (23 + seed))[..., None]
    side = min(w, h) * 3 // 4
    glyph = np.asarray(Image.fromarray((digit * 255).astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC),
                       dtype=np.float32) / 255
    y0, x0 = (h - side) // 2, (w - side) // 2
    g = glyph[..., None]
    base[y0:y0 + side, x0:x0 + side] = base[y0:y0 + side, x0:x0 + side] * (1 - g) + g * 240
    base += rng.normal(0, 6, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def jpegs(work, trained, digits) -> dict:
    from PIL import Image

    d = work / "jpegs"
    d.mkdir()
    paths = []
    for i, (w, h) in enumerate(JPEG_SIZES):
        p = d / f"photo{i}_{w}x{h}.jpg"
        Image.fromarray(_photo_like(w, h, i, digits[1][i, 0])).save(p, quality=90)
        paths.append(p)
    onnx224 = trained["artefacts"]["onnx-224"]
    out = work / "jpegs-ref"
    out.mkdir()
    ref("jpegs", out, "--model", onnx224, "--imgsz", 224, *paths)
    return {"paths": paths, "model": onnx224, "tensors": np.load(out / "tensors.npy"),
            "probs": np.load(out / "probs.npy")}


def test_same_jpegs_same_input_and_probabilities(jpegs):
    from yolo_export import YOLO
    from yolo_export.data.transforms import preprocess
    from yolo_export.engine.predictor import resolve_preprocess

    y = YOLO(jpegs["model"])
    pp = resolve_preprocess(y.backend(), None)
    ours = np.stack([preprocess(p, pp) for p in jpegs["paths"]])
    tdiff = np.abs(ours - jpegs["tensors"]).max(axis=(1, 2, 3))
    probs = np.stack([r.probs.data for r in y.predict([str(p) for p in jpegs["paths"]])])
    dp = float(np.abs(probs - jpegs["probs"]).max())
    print(f"JPEGs {JPEG_SIZES}: input max|d| per image {tdiff.tolist()}, probabilities max|dp| {dp:.2e}")
    assert tdiff.max() == 0
    assert dp <= 1e-6


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q", "-p", "no:randomly"]))
