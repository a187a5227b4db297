"""Regenerate the seed corpus in tests/fuzz/corpus/ (small valid and hostile examples per target; < 1 MB in all).

    python tests/fuzz/make_corpus.py
"""

from __future__ import annotations

import io
import json
import struct
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

META = {"description": "seed", "task": "classify", "batch": 1, "imgsz": [32, 32], "names": {0: "a", 1: "b"},
        "args": {"half": False, "dynamic": True}, "stride": 1, "channels": 3,
        "preprocess": {"resize": 36, "crop": 32, "interpolation": "bilinear", "mean": [0, 0, 0], "std": [1, 1, 1]}}


def seeds() -> dict[str, dict[str, bytes]]:
    from hostile import files as F

    from yolo_export import metadata
    from yolo_export.backends.executorch import _trailer
    from yolo_export.backends.tensorrt import encode_header

    enc = metadata.encode(META)
    js = json.dumps(enc).encode()
    yml = metadata.to_yaml_text(META).encode()

    def tflite(text: bytes) -> bytes:
        buf = io.BytesIO(b"\x1c\0\0\0TFL3" + b"\0" * 56)   # the FlatBuffer file identifier at bytes 4-8
        buf.seek(0, 2)
        with zipfile.ZipFile(buf, "a", zipfile.ZIP_DEFLATED) as z:
            z.writestr("metadata.json", text)
        return buf.getvalue()

    def ts(text: bytes) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            z.writestr("m/extra/config.txt", text)
            z.writestr("m/version", "3\n")
        return buf.getvalue()

    ET = b"\0\0\0\0ET12"   # the ExecuTorch file identifier at bytes 4-8 (the reader checks it first)
    mj = {"format": "graph-model", "modelTopology": {"node": []},
          "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": []}]}
    return {
        "metadata_decode": {"names": b"\x03\x09{0: 'a'}", "pp": b"\x04\x0c" + json.dumps(META["preprocess"]).encode()},
        "metadata_yaml": {"good": yml, "laughs": F.billion_laughs(3).encode(), "tag": b"a: !!python/name:os.system\n"},
        "json_document": {"good": js, "deep": b"[" * 40 + b"]" * 40},
        "tensorrt_header": {"good": encode_header(META) + b"ENGINE", "long": struct.pack("<I", 1 << 30) + b"{}",
                            "nested": struct.pack("<I", 2010) + b'{"a": ' + b"[" * 2000 + b"ENGINE"},
        "pte_trailer": {"good": ET + b"PTE" + _trailer(META),
                        "long": ET + b"{}" + struct.pack("<Q", 1 << 40) + b"YXMETA01"},
        "tflite_metadata": {"good": tflite(json.dumps(enc).encode()), "bad": tflite(b"{]")},
        "torchscript_metadata": {"good": ts(json.dumps(enc).encode()), "empty": ts(b"")},
        "tfjs_manifest": {"good": json.dumps(mj).encode(),
                          "escape": json.dumps({**mj, "weightsManifest": [{"paths": ["../x"]}]}).encode()},
        "checkpoint": {"tiny": _tiny_checkpoint()},
    }


def _tiny_checkpoint() -> bytes:
    import torch

    from yolo_export.nn.checkpoint import FORMAT, FORMAT_VERSION

    ck = {"format": FORMAT, "format_version": FORMAT_VERSION, "version": "0", "task": "classify",
          "yaml": {"nc": 2, "scale": "n"}, "names": {0: "a", 1: "b"}, "imgsz": 32, "preprocess": None,
          "state_dict": {"w": torch.zeros(2, dtype=torch.float16)}, "fused": False}
    buf = io.BytesIO()
    torch.save(ck, buf)
    return buf.getvalue()


def main() -> int:
    total = 0
    for target, files in seeds().items():
        d = HERE / "corpus" / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)
            total += len(data)
    print(f"seed corpus: {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
