"""Crafted checkpoints, as an attacker would write them: nothing in them runs, nothing outside them is written,
memory stays bounded, and each ends in one line and a non-zero exit.

Every file is generated here. All cases run in one child process (``yexport info`` in-process, then ``export``,
``predict`` and ``train --pretrained`` for a few) with an address-space cap of its baseline + 1 GiB; the child
reports each case's exit code, stderr and peak RSS (``ru_maxrss``) growth over the baseline after imports.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from ultralytics_fake import make_ultralytics_checkpoint

GiB = 1 << 30


# ------------------------------------------------------------------------------------------ file makers
class _Cmd:
    """Pickles as a call of ``fn(*args)``: the classic payload."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _zip(path: Path, pkl: bytes, storages: dict[str, bytes] | None = None, extra: dict[str, bytes] | None = None,
         deflate: set[str] = frozenset()) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in {"data.pkl": pkl, "byteorder": b"little", **{f"data/{k}": v for k, v in
                                                                     (storages or {}).items()},
                           **(extra or {})}.items():
            z.writestr(zipfile.ZipInfo(f"archive/{name}"), data,
                       compress_type=zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED)
    return path


class _Ref:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, ref, size):
        self.ref, self.size = ref, size

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (self.ref, 0, self.size, (1,), False, collections.OrderedDict()))


class _View(_Tensor):
    """A tensor over ``ref`` with its own strides: stride 0 repeats one element as often as ``size`` asks."""

    def __init__(self, ref, size, stride):
        super().__init__(ref, size)
        self.stride = stride

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (self.ref, 0, self.size, self.stride, False,
                                                   collections.OrderedDict()))


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Ref):
            return ("storage", getattr(obj, "stype", torch.FloatStorage), obj.key, "cpu", obj.numel)
        return None


def _half_ref(key, numel):
    ref = _Ref(key, numel)
    ref.stype = torch.HalfStorage
    return ref


def _memo_put(index: int) -> bytes:
    """An empty dict stored in memo slot ``index`` (LONG_BINPUT): the unpickler sizes its memo table to the index."""
    return b"\x80\x02}r" + index.to_bytes(4, "little") + b"."


def _copies(times: int, n: int = 100_000) -> bytes:
    """``set(big_list)`` ``times`` times, the list fetched from the memo each time: a few bytes per copy of it."""
    body = bytearray(b"\x80\x02cbuiltins\nset\nq\x00(")
    body += b"".join(b"J" + i.to_bytes(4, "little") for i in range(n)) + b"lq\x010("
    body += b"h\x00h\x01\x85R" * times + b"l."
    return bytes(body)


def _pkl(obj, protocol=2) -> bytes:
    buf = io.BytesIO()
    _TorchPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def _ours(**over) -> dict:
    from yolo_export.nn.checkpoint import FORMAT, FORMAT_VERSION
    from yolo_export.nn.model import DEFAULT_ATTRS, resolve_cfg

    ck = {"format": FORMAT, "format_version": FORMAT_VERSION, "task": "classify",
          "yaml": {**resolve_cfg("yolov8n-cls.yaml"), "nc": 3, "module_attrs": dict(DEFAULT_ATTRS)},
          "names": {0: "a", 1: "b", 2: "c"}, "imgsz": 32,
          "state_dict": {"model.9.linear.bias": torch.zeros(3)}, "fused": False}
    ck.update(over)
    return ck


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def _nested_shared(depth: int, fan: int = 10):
    x = ["leaf"]
    for _ in range(depth):
        x = [x] * fan
    return x


def _zip_with_bomb_record(path: Path, raw_mb: int) -> Path:
    """Our checkpoint whose one storage record is deflated: ~0.5 MB in the file, ``raw_mb`` MB once inflated."""
    good = io.BytesIO()
    torch.save(_ours(), good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if "/data/" not in info.filename:
                dst.writestr(info.filename, src.read(info))
                continue
            zi = zipfile.ZipInfo(info.filename)
            zi.compress_type = zipfile.ZIP_DEFLATED
            with dst.open(zi, "w", force_zip64=True) as out:
                chunk = bytes(16 << 20)
                for _ in range(raw_mb // 16):
                    out.write(chunk)
    return path


def _torchscript_archive(path: Path) -> Path:
    class M(torch.nn.Module):
        def forward(self, x):
            return x + 1

    torch.jit.save(torch.jit.script(M()), str(path))
    return path


def _tar_checkpoint(path: Path, marker: Path) -> Path:
    with tarfile.open(path, "w") as t:
        for name, data in (("sys_info", pickle.dumps({"protocol_version": 1001}, protocol=2)),
                           ("pickle", pickle.dumps(_Cmd(os.system, f"touch {marker}"), protocol=2)),
                           ("storages", b""), ("tensors", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def _raw_pickle_zip(path: Path, body: bytes) -> Path:
    return _zip(path, body)


def build_cases(d: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, regex the one-line error must match)."""
    touch = f"touch {marker}"
    cmd = _Cmd(os.system, touch)
    fake_model = None
    cases = {
        # row 1: bare pickles and legacy formats run their payload in torch.load; here they are refused unparsed
        "row1_bare_pickle_eocd": (d / "r1a.pt", pickle.dumps(cmd, protocol=2) + b"PK\x05\x06" + bytes(18),
                                  "bare pickle"),
        "row1_legacy_torch_save": (None, None, "bare pickle"),
        "row1_legacy_tar": (_tar_checkpoint(d / "r1c.pt", marker), None, "tar archive"),
        # row 2: a TorchScript program named .pt is code, never loaded by a .pt path
        "row2_torchscript_as_pt": (_torchscript_archive(d / "r2.pt"), None, "TorchScript program"),
        # row 6: billion laughs through the pickle memo, and plain deep nesting
        "row6_shared_refs_metrics": (_save(d / "r6a.pt", _ours(metrics=_nested_shared(9))), None,
                                     "'metrics' holds more than 100000 items"),
        "row6_deep_train_args": (_save(d / "r6b.pt", _ours(train_args=_deep(200))), None, "nests deeper than 32"),
        # row 7: architecture budgets before building
        "row7_nc_300000": (_save(d / "r7a.pt", _ours(yaml={**_ours()["yaml"], "nc": 300000})), None,
                           r"model nc is 300,000 classes, over the limit of 100,000 \(set YOLO_EXPORT_MAX_NC"),
        "row7_width_64": (_save(d / "r7b.pt", _ours(yaml={**_ours()["yaml"], "scales": {"n": [0.33, 64, 1024]}})),
                          None, r"model width multiple is 64 times, over the limit of 4 \(set YOLO_EXPORT_MAX_WIDTH"),
        # row 8: a compressed storage record (0.5 MB -> 512 MB) is refused unread
        "row8_deflate_bomb_record": (_zip_with_bomb_record(d / "r8a.pt", 512), None, "is compressed"),
        "row8_declared_storage_too_big": (_zip(d / "r8b.pt", _pkl(_ours(state_dict={"w": _Tensor(_Ref("0", 10**10),
                                                                                              (10**10,))})),
                                               {"0": bytes(16)}), None, r"declares 40000000000 bytes"),
        "row8_data_pkl_bomb": (_zip(d / "r8c.pt", bytes(100 << 20), deflate={"data.pkl"}), None,
                               r"data.pkl is 104,857,600 bytes, over the limit of 67,108,864 "
                               r"\(set YOLO_EXPORT_MAX_PICKLE_BYTES"),
        # views and the pickle memo: a few bytes that ask for gigabytes
        "view_stride_zero": (_zip(d / "v1.pt", _pkl(_ours(state_dict={"model.9.linear.bias": _View(
            _half_ref("0", 1), (30000, 30000), (0, 0))})), {"0": bytes(2)}), None,
                             r"tensors together hold more elements than the file has bytes"),
        "view_one_storage_many_times": (_zip(d / "v2.pt", _pkl(_ours(state_dict={
            f"w{i}": _View(_half_ref("0", 1 << 16), (1 << 16,), (1,)) for i in range(6000)})),
            {"0": bytes(2 << 16)}), None, r"tensors together hold more elements than the file has bytes"),
        "memo_sparse_index": (_zip(d / "m1.pt", _memo_put(1 << 30)), None, r"memo slot 1,073,741,824 before slot 0"),
        "pickle_empty_sets": (_zip(d / "m2.pt", b"\x80\x04" + b"\x8f" * (8 << 20) + b"."), None,
                              r"YOLO_EXPORT_MAX_PICKLE_ITEMS"),
        "pickle_memo_copies": (_zip(d / "m3.pt", _copies(1000)), None, r"YOLO_EXPORT_MAX_PICKLE_ITEMS"),
        # already safe: globals that run code, in every pickle spelling
        "eval": (_zip(d / "s1.pt", pickle.dumps(_Cmd(eval, f"__import__('os').system('{touch}')"))), None,
                 r"refused.*builtins\.eval"),
        "exec": (_zip(d / "s2.pt", pickle.dumps(_Cmd(exec, f"import os; os.system('{touch}')"))), None,
                 r"refused.*builtins\.exec"),
        "getattr_chain": (_zip(d / "s3.pt", pickle.dumps(_Cmd(getattr, _Cmd(__import__, "os"), "system"))), None,
                          r"refused.*builtins\.getattr"),
        "protocol4_stack_global": (_zip(d / "s4.pt", pickle.dumps(_Cmd(subprocess.call, ["touch", str(marker)]),
                                                                  protocol=4)), None, r"refused.*subprocess\.call"),
        "inst_opcode": (_zip(d / "s5.pt", b"(S'" + touch.encode() + b"'\nios\nsystem\n."), None,
                        r"refused.*(os|posix)\.system"),
        "obj_opcode": (_zip(d / "s6.pt", b"\x80\x02(cos\nsystem\nX" + bytes([len(touch)]) + b"\x00\x00\x00"
                            + touch.encode() + b"o."), None, r"refused.*(os|posix)\.system"),
        "ext_opcode": (_zip(d / "s7.pt", b"\x80\x02\x82\x01."), None, r"cannot read checkpoint|refused"),
        "copyreg_reconstructor": (_zip(d / "s8.pt", pickle.dumps(_Cmd(__import__("copyreg")._reconstructor,
                                                                      object, object, None))), None,
                                  r"refused.*copyreg\._reconstructor"),
        "unknown_reference_global": (_zip(d / "s9.pt", b"\x80\x02cultralytics.utils.downloads\nattempt_download_asset"
                                                        b"\n."), None,
                                     r"refused.*ultralytics\.utils\.downloads\.attempt_download_asset"),
        "numpy_object_array": (_zip(d / "s10.pt", pickle.dumps(_np_object_array(cmd))), None,
                               r"refused.*(os|posix)\.system"),
        "numpy_huge_reconstruct": (_zip(d / "s11.pt", pickle.dumps(_Cmd(_np_reconstruct(), _np_nd(), (10**12,),
                                                                        b"b"))), None, "non-empty initial shape"),
        "tensor_hook_payload": (_zip(d / "s12.pt", pickle.dumps(_Cmd(torch._utils._rebuild_parameter, None, False,
                                                                     collections.OrderedDict(x=cmd)))), None,
                                r"refused.*(os|posix)\.system"),
        "torch_load_global": (_zip(d / "s13.pt", pickle.dumps(_Cmd(torch.load, "x.pt"))), None,
                              r"refused.*torch.*load"),
        "reference_model_with_payload": (None, None, r"refused.*(os|posix)\.system"),
    }
    out = {}
    for name, (path, body, regex) in cases.items():
        if name == "row1_bare_pickle_eocd":
            path.write_bytes(body)
        elif name == "row1_legacy_torch_save":
            path = d / "r1b.pt"
            torch.save({"model": cmd}, path, _use_new_zipfile_serialization=False)
        elif name == "reference_model_with_payload":
            path = d / "s14.pt"
            fake_model = fake_model or _tiny_model()
            make_ultralytics_checkpoint(path, fake_model, imgsz=32, extra={"train_args": {"x": cmd}})
        out[name] = (path, regex)
    return out


def _deep(n):
    x = {}
    for _ in range(n):
        x = {"a": x}
    return x


def _np_object_array(payload):
    import numpy as np

    a = np.empty(2, dtype=object)
    a[0] = payload
    return a


def _np_reconstruct():
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct


def _np_nd():
    import numpy as np

    return np.ndarray


def _tiny_model():
    from yolo_export.nn.model import ClassificationModel

    m = ClassificationModel("yolov8n-cls.yaml", nc=3)
    m.imgsz = 32
    return m


# ------------------------------------------------------------------------------------------------- child
CHILD = r"""
import contextlib, io, json, os, resource, sys
from yolo_export.cli import main
import yolo_export.nn.checkpoint, yolo_export.engine.trainer, torch  # imports count in the baseline
import torch.jit
def _jit_load(*a, **k):  # if anything reached torch.jit.load, the marker says so
    open(os.environ["MARKER"], "w").close()
    raise RuntimeError("torch.jit.load was called")
torch.jit.load = _jit_load
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
vm = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), hard))
out = {}
for name, argv in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv, standalone_mode=False)
            rc = 0
        except SystemExit as e:
            rc = e.code
        except BaseException as e:
            rc, err = 99, io.StringIO(f"escaped: {type(e).__name__}: {e}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out[name] = {"rc": rc, "stderr": err.getvalue(), "rss_growth": peak - base}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    marker = d / "pwned"
    cases = build_cases(d, marker)
    img = d / "img.png"
    from PIL import Image

    Image.new("RGB", (40, 40), (90, 120, 30)).save(img)
    data = d / "data"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (data / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (16, 16), (i * 80, 40, 200)).save(data / split / c / f"{i}.png")
    argv = {name: ["info", str(p)] for name, (p, _) in cases.items()}
    ts = d / "prog.torchscript"
    _torchscript_archive(ts)
    argv["torchscript_info_runs_nothing"] = ["info", str(ts)]
    for name in ("row1_bare_pickle_eocd", "row2_torchscript_as_pt", "row6_shared_refs_metrics"):
        p = str(cases[name][0])
        argv[f"{name}:export"] = ["export", p, "--format", "onnx"]
        argv[f"{name}:predict"] = ["predict", "--model", p, "--source", str(img)]
        argv[f"{name}:train"] = ["train", "--model", "yolov8n-cls.yaml", "--pretrained", p, "--data", str(data),
                                 "--epochs", "1", "--imgsz", "16", "--project", str(d / "runs")]
    env = {**os.environ, "MARKER": str(marker)}
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argv)], capture_output=True, text=True, env=env,
                       cwd=d, timeout=600)
    line = [s for s in r.stdout.splitlines() if s.startswith("RESULT ")]
    assert line, r.stdout[-2000:] + r.stderr[-3000:]
    results = json.loads(line[0][7:])
    return {"cases": cases, "results": results, "marker": marker, "dir": d}


CASE_NAMES = ["row1_bare_pickle_eocd", "row1_legacy_torch_save", "row1_legacy_tar", "row2_torchscript_as_pt",
              "row6_shared_refs_metrics", "row6_deep_train_args", "row7_nc_300000", "row7_width_64",
              "row8_deflate_bomb_record", "row8_declared_storage_too_big", "row8_data_pkl_bomb",
              "view_stride_zero", "view_one_storage_many_times", "memo_sparse_index", "pickle_empty_sets",
              "pickle_memo_copies", "eval", "exec",
              "getattr_chain", "protocol4_stack_global", "inst_opcode", "obj_opcode", "ext_opcode",
              "copyreg_reconstructor", "unknown_reference_global", "numpy_object_array", "numpy_huge_reconstruct",
              "tensor_hook_payload", "torch_load_global", "reference_model_with_payload"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_info_refuses_in_one_line_and_runs_nothing(hostile, name):
    import re

    res = hostile["results"][name]
    regex = hostile["cases"][name][1]
    err = res["stderr"].strip()
    assert res["rc"] == 1, res
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert re.search(regex, err), (regex, err)
    assert "Traceback" not in err and not hostile["marker"].exists()
    limit = 200 << 20 if name.startswith("row8") else GiB  # the 512 MB record must not be inflated at all
    assert res["rss_growth"] < limit, f"{name}: peak RSS grew by {res['rss_growth'] / 2**20:.0f} MB"


@pytest.mark.parametrize("cmd", ["export", "predict", "train"])
@pytest.mark.parametrize("name", ["row1_bare_pickle_eocd", "row2_torchscript_as_pt", "row6_shared_refs_metrics"])
def test_every_command_refuses_in_one_line(hostile, name, cmd):
    res = hostile["results"][f"{name}:{cmd}"]
    err = res["stderr"].strip()
    assert res["rc"] == 1 and err.startswith("error: ") and len(err.splitlines()) == 1, (cmd, res)
    assert not hostile["marker"].exists() and res["rss_growth"] < GiB


def test_torchscript_info_reads_metadata_without_loading(hostile):
    """``info`` of a .torchscript reads extra/config.txt from the zip: torch.jit.load (patched to leave the marker)
    is never reached."""
    res = hostile["results"]["torchscript_info_runs_nothing"]
    assert not hostile["marker"].exists(), res


def test_rss_figures_are_reported(hostile, capsys):
    rows = {k: round(v["rss_growth"] / 2**20, 1) for k, v in hostile["results"].items()}
    with capsys.disabled():
        print("\npeak RSS growth (MB) per case:", json.dumps(rows))
        for k, v in hostile["results"].items():
            print(f"{k}: rc {v['rc']}: {v['stderr'].strip()[:150]}")
    assert max(rows.values()) < 1024


def test_damaged_checkpoints_fail_with_our_error_only(tmp_path):
    """Truncations and byte flips of a real checkpoint (ours and a reference-format one): every outcome is either a
    loaded checkpoint or one CheckpointError/YoloExportError line, never another exception."""
    import random

    from yolo_export.errors import YoloExportError
    from yolo_export.nn.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint

    m = _tiny_model()
    ours, ref = tmp_path / "ours.pt", tmp_path / "ref.pt"
    save_checkpoint(ours, m)
    make_ultralytics_checkpoint(ref, m, imgsz=32)
    rng = random.Random(0)
    outcomes = collections.Counter()
    for src in (ours, ref):
        good = src.read_bytes()
        for i in range(25):
            b = bytearray(good)
            if i % 3 == 0:
                b = b[: rng.randrange(len(b))]
            else:
                for _ in range(rng.randint(1, 8)):
                    b[rng.randrange(len(b))] = rng.randrange(256)
            p = tmp_path / f"bad{i}.pt"
            p.write_bytes(bytes(b))
            try:
                build_from_checkpoint(load_checkpoint(p))
                outcomes["loaded"] += 1
            except YoloExportError as e:
                assert "\n" not in str(e)
                outcomes["refused"] += 1
    assert outcomes["refused"] > 20, outcomes


def _record(path, name: str):
    """(central-directory entry, offset of its local header, offset of its data) of one record of a torch zip."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(name))
    raw = path.read_bytes()
    n, m = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    return info, info.header_offset, info.header_offset + 30 + n + m


def test_storage_records_are_checked_as_they_are_read(tmp_path):
    """Weights are read straight from the file into tensor memory: a flipped weight byte fails the record's CRC-32,
    and a local header that disagrees with the central directory (name, compression) is refused, each in one line."""
    from yolo_export.errors import CheckpointError
    from yolo_export.nn.checkpoint import load_checkpoint, save_checkpoint

    good = tmp_path / "good.pt"
    save_checkpoint(good, _tiny_model())
    info, head, data = _record(good, "data/0")
    assert info.file_size > 0
    cases = [(data + info.file_size // 2, None, "fails its CRC-32 check"),  # a weight byte flipped
             (head + 30, b"X", "local header of data/0 does not match"),   # the local name's first byte
             (head + 8, b"\x08", "local header of data/0 does not match")]  # the local method: deflate
    for i, (pos, val, match) in enumerate(cases):
        b = bytearray(good.read_bytes())
        b[pos] = b[pos] ^ 0xFF if val is None else val[0]
        p = tmp_path / f"bad{i}.pt"
        p.write_bytes(bytes(b))
        with pytest.raises(CheckpointError, match=match) as e:
            load_checkpoint(p)
        assert "\n" not in str(e.value)
    load_checkpoint(good)
