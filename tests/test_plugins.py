"""Third-party backends through the ``yolo_export.backends`` entry-point group.

A tiny plugin package is written into a temp dir with a ``*.dist-info`` that declares its entry point, put on
``sys.path``, and the registry re-reads the entry points. The plugin is a real format: ``numpy`` (``.npz``) stores
the fused network's weights and layer program, and runs it with a NumPy interpreter (no torch at run time).
"""

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from backend_models import cond_pt, conditioned_master, result_probs, torch_probs  # noqa: F401
from yolo_export import YOLO, registry
from yolo_export.data.samples import check_inputs

PLUGIN = '''
"""yx_numpy: a yolo-export backend plugin. The fused YOLOv8-cls as a layer program + weights in one .npz,
run by a NumPy interpreter."""
import io
import json
import os
from pathlib import Path

import numpy as np

from yolo_export.registry import Backend, Option, Runner

# an export option of this format only: declared as data, it becomes `yexport MODEL --compress`
COMPRESS = Option("compress", bool, False, "Store the .npz compressed (numpy plugin).", recorded=True)


def _program(model):
    ops, weights = [], {}

    def conv(c):
        i = len(weights) // 2
        weights[f"w{i}"] = c.conv.weight.detach().cpu().numpy().astype(np.float32)
        weights[f"b{i}"] = c.conv.bias.detach().cpu().numpy().astype(np.float32)
        act = type(c.act).__name__ == "SiLU"
        return {"op": "conv", "i": i, "s": c.conv.stride[0], "p": c.conv.padding[0], "act": act}

    for layer in model.model:
        kind = type(layer).__name__
        if kind == "Conv":
            ops.append(conv(layer))
        elif kind == "C2f":
            ops.append({"op": "c2f", "cv1": conv(layer.cv1), "cv2": conv(layer.cv2),
                        "m": [{"cv1": conv(b.cv1), "cv2": conv(b.cv2), "add": bool(b.add)} for b in layer.m]})
        elif kind == "Classify":
            ops.append(conv(layer.conv))
            weights["fc_w"] = layer.linear.weight.detach().cpu().numpy().astype(np.float32)
            weights["fc_b"] = layer.linear.bias.detach().cpu().numpy().astype(np.float32)
            ops.append({"op": "head"})
        else:
            raise ValueError(f"yx_numpy cannot express layer {kind}")
    return ops, weights


def _conv(x, w, b, s, p, act):
    if p:
        x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    k = w.shape[-1]
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    y = np.einsum("nchwij,ocij->nohw", win, w, optimize=True) + b[None, :, None, None]
    return y / (1.0 + np.exp(-y)) if act else y


class NumpyRunner(Runner):
    def __init__(self, path):
        with np.load(path, allow_pickle=False) as z:
            self.ops = json.loads(str(z["__program__"]))
            self.w = {k: z[k].astype(np.float64) for k in z.files if not k.startswith("__")}

    def c(self, x, op):
        return _conv(x, self.w[f"w{op['i']}"], self.w[f"b{op['i']}"], op["s"], op["p"], op["act"])

    def __call__(self, x):
        x = x.astype(np.float64)
        for op in self.ops:
            if op["op"] == "conv":
                x = self.c(x, op)
            elif op["op"] == "c2f":
                y = list(np.split(self.c(x, op["cv1"]), 2, axis=1))
                for m in op["m"]:
                    z = self.c(self.c(y[-1], m["cv1"]), m["cv2"])
                    y.append(y[-1] + z if m["add"] else z)
                x = self.c(np.concatenate(y, 1), op["cv2"])
            else:
                logits = x.mean(axis=(2, 3)) @ self.w["fc_w"].T + self.w["fc_b"]
                e = np.exp(logits - logits.max(1, keepdims=True))
                x = e / e.sum(1, keepdims=True)
        return x.astype(np.float32)


def _save(path, program, weights, meta, compress=False):
    from yolo_export.metadata import encode

    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, __program__=np.array(json.dumps(program)),
                                                    __meta__=np.array(json.dumps(encode(meta))), **weights)
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


class NumpyBackend(Backend, name="numpy", aliases=("npz",), title="NumPy", suffix=".npz", extra="numpy",
                   requires=("numpy",), options=(COMPRESS,)):
    def export(self, ctx):
        program, weights = _program(ctx.model)
        out = ctx.workdir / f"{ctx.stem}.npz"
        _save(out, program, weights, ctx.metadata, compress=ctx.args["compress"])
        return out

    def load(self, path, device, metadata):
        return NumpyRunner(path)

    def write_metadata(self, path, meta):
        with np.load(path, allow_pickle=False) as z:
            program = json.loads(str(z["__program__"]))
            weights = {k: z[k] for k in z.files if not k.startswith("__")}
        _save(path, program, weights, meta)

    def read_metadata(self, path):
        from yolo_export.metadata import decode

        with np.load(path, allow_pickle=False) as z:
            return decode(json.loads(str(z["__meta__"]))) if "__meta__" in z.files else {}
'''

BROKEN = '''
raise ImportError("yx_broken needs a library that is not installed")
'''


def _install(site: Path, dist: str, module: str, source: str, entry: str):
    """A package plus its ``*.dist-info`` (METADATA, entry_points.txt, RECORD), as an installer would leave it."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"  # the installer's normalised name
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[yolo_export.backends]\n{entry}\n")
    (info / "RECORD").write_text("")


@pytest.fixture()
def plugins(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    _install(site, "yx-numpy", "yx_numpy", PLUGIN, "numpy = yx_numpy:NumpyBackend")
    _install(site, "yx-broken", "yx_broken", BROKEN, "broken = yx_broken:Backend")
    _install(site, "yx-clash", "yx_clash", "from yolo_export.backends.onnx import OnnxBackend as B\n",
             "onnx = yx_clash:B")
    monkeypatch.delenv("YOLO_EXPORT_NO_PLUGINS", raising=False)
    monkeypatch.syspath_prepend(str(site))
    import logging

    from yolo_export.utils import LOGGER

    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        registry.reload()
    finally:
        LOGGER.removeHandler(handler)
    yield "\n".join(seen)  # the registry's warnings about the plugins it refused
    monkeypatch.undo()
    for mod in ("yx_numpy", "yx_broken", "yx_clash"):
        sys.modules.pop(mod, None)
    registry.reload()
    assert "numpy" not in registry.names()


def test_plugin_backend_exports_and_predicts_end_to_end(plugins, cond_pt, images, cli):  # noqa: F811
    b = registry.get("npz")
    assert b.name == "numpy" and type(b).__module__ == "yx_numpy"
    assert registry.get("onnx").__module__ == "yolo_export.backends.onnx"  # a plugin cannot replace a built-in
    warnings = plugins.splitlines()
    assert any("'broken' failed to load" in w and "not installed" in w for w in warnings), warnings
    assert any("'onnx' failed to load" in w and "built in" in w for w in warnings), warnings

    # Python API: export (with the parity check), then predict through the same facade
    y = YOLO(cond_pt)
    path = Path(y.export("numpy"))
    assert path.name == "cond.npz"
    par = y.last_export.parity
    assert par["status"] == "passed" and par["max_abs_diff"] <= 1e-4 and par["top1_agreement"] == 1.0
    m = YOLO(path)
    assert m.format == "numpy" and m.names == y.names and m.metadata["verification"]["status"] == "passed"
    a, b2 = y(images), m(images, batch=2)
    assert [r.probs.top1 for r in a] == [r.probs.top1 for r in b2]
    assert np.abs(result_probs(a) - result_probs(b2)).max() <= 1e-4
    x = check_inputs(32, 4, seed=5)
    assert np.abs(m.backend().run(x) - torch_probs(cond_pt, x)).max() <= 1e-4

    # CLI: the plugin's format is listed, exported to and predicted with like any other
    code, out, err = cli("formats", "--json")
    assert code == 0 and "numpy" in out
    code, out, err = cli(cond_pt, "--format", "numpy", "-o", cond_pt.with_name("cli.npz"), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["format"] == "numpy" and doc["parity"]["status"] == "passed"
    code, out, err = cli("predict", "--model", doc["path"], "--source", images, "--json")
    assert code == 0, err
    assert str(a[0].probs.top1) in out or y.names[a[0].probs.top1] in out


def test_plugin_option_is_a_flag_of_its_format_only(plugins, cond_pt, cli):  # noqa: F811
    """The plugin's declared option: a CLI flag with its help, taken by its format (and recorded in the artefact),
    refused by the others in the one "does not take" line that names what each takes."""
    code, out, _ = cli(cond_pt, "--help")
    assert code == 0 and "--compress" in out and "Store the .npz compressed" in out and "[numpy]" in out
    code, out, err = cli(cond_pt, "--format", "onnx", "--compress")
    assert code == 2 and "format 'onnx' does not take --compress (it takes --calib-images" in err
    code, out, err = cli(cond_pt, "--format", "pytorch", "--compress", "--json")
    assert code == 2 and json.loads(out)["error"].startswith("format 'pytorch' does not take --compress")
    code, out, err = cli(cond_pt, "--format", "numpy", "--compress", "--no-verify", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["args"]["compress"] is True and YOLO(doc["path"]).metadata["args"]["compress"] is True
    with np.load(doc["path"]) as z:  # really compressed: the zip members are deflated
        import zipfile

        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zipfile.ZipFile(doc["path"]).infolist())
        assert "__program__" in z.files
    code, out, _ = cli("formats", "--json")
    row = next(r for r in json.loads(out)["formats"] if r["format"] == "numpy")
    assert row["args"] == ["compress"] and row["options"][0]["flag"] == "--compress"


def test_broken_plugin_does_not_break_the_tool(plugins, cli):
    assert "warning: backend plugin 'broken' failed to load" in plugins
    code, out, err = cli("formats")
    assert code == 0 and "onnx" in out and "numpy" in out
    with pytest.raises(Exception, match="unknown format 'broken'"):
        registry.get("broken")
