"""ExecuTorch (``.pte``): ``torch.export`` -> edge dialect lowered to XNNPACK -> an ExecuTorch program, run with
ExecuTorch's Python runtime.

fp32, fixed batch (the program's input shape is planned at export). Metadata is carried inside the file, in a
trailer appended after the program: ``<JSON bytes><u64 little-endian length><b"YXMETA01">``. ExecuTorch reads the
program and its segments by the offsets in its own header, so trailing bytes do not disturb loading (the parity
check after export runs the file with the trailer in place); rewriting the metadata only replaces the trailer.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
from pathlib import Path

import numpy as np

from yolo_export.errors import ArgumentError, FileError, YoloExportError
from yolo_export.registry import Backend, Runner, register

MAGIC = b"YXMETA01"
_TAIL = struct.Struct("<Q")


def _split(data: bytes) -> tuple[bytes, bytes | None]:
    """(program bytes, metadata JSON bytes or None)."""
    end = len(data) - len(MAGIC) - _TAIL.size
    if end >= 0 and data[-len(MAGIC):] == MAGIC:
        (n,) = _TAIL.unpack_from(data, end)
        if n <= end:
            return data[:end - n], data[end - n:end]
    return data, None


def _trailer(meta: dict) -> bytes:
    from yolo_export.metadata import encode

    blob = json.dumps(encode(meta), ensure_ascii=True, sort_keys=True).encode()
    return blob + _TAIL.pack(len(blob)) + MAGIC


class ExecuTorchRunner(Runner):
    def __init__(self, path, device="cpu", threads: int | None = None):
        import torch
        from executorch.runtime import Runtime, Verification

        from yolo_export.threads import executorch_threads

        self.torch = torch
        check_program(path)
        self.path = Path(path)
        # the FlatBuffer verifier and the program's own offset checks (the default of recent releases, asked for)
        program = Runtime.get().load_program(self.path, verification=Verification.InternalConsistency)
        self.method = program.load_method("forward")
        meta = self.method.metadata
        shape = _input_sizes(meta)
        self.fixed_batch = int(shape[0]) if shape else None
        self.device = "cpu"
        self.threads = executorch_threads(threads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from yolo_export.errors import reading

        with reading(self.path, "an ExecuTorch model"):   # a damaged program can load and then fail to run
            out = self.method.execute([self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])
        return out[0].detach().cpu().numpy()


def check_program(path) -> None:
    """The FlatBuffer file identifier ('ET..' at bytes 4-8): the runtime aborts the process on some other bytes."""
    with open(path, "rb") as f:
        if f.read(8)[4:6] != b"ET":
            raise FileError(f"{path} is not an ExecuTorch program (no 'ET' file identifier)")


def _input_sizes(method_meta) -> list[int] | None:
    try:
        return list(method_meta.input_tensor_meta(0).sizes())
    except Exception:  # noqa: BLE001 - the shape is a hint; LoadedModel falls back to the metadata batch
        return None


@register
class ExecuTorchBackend(Backend, name="executorch", aliases=("pte",), title="ExecuTorch", order=110, suffix=".pte",
                       extra="executorch", requires=("executorch", "torch")):

    def check_args(self, args):
        super().check_args(args)
        if str(args.get("device") or "cpu") not in ("cpu", "CPU"):
            raise ArgumentError("executorch exports an XNNPACK (CPU) program; drop --device")

    def export(self, ctx):
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            model = ctx.model.cpu().float().eval()
            sample = ctx.sample.cpu().float()
            with torch.no_grad():
                ep = torch.export.export(model, (sample,), strict=False)
                program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
        data = program.buffer
        if not data:
            raise YoloExportError("ExecuTorch produced an empty program")
        out = ctx.workdir / f"{ctx.stem}.pte"
        out.write_bytes(bytes(data) + _trailer(ctx.metadata))
        return out

    def load(self, path, device, metadata, threads=None):
        self.cpu_only(device)
        return ExecuTorchRunner(path, threads=threads)

    def write_metadata(self, path: Path, meta):
        path = Path(path)
        program, _ = _split(path.read_bytes())
        tmp = path.with_name(f".{path.name}.meta-tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(program + _trailer(meta))
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    def read_metadata(self, path):
        from yolo_export.limits import METADATA_BYTES, loads_json
        from yolo_export.metadata import decode

        path = Path(path)
        check_program(path)
        size = path.stat().st_size
        with open(path, "rb") as f:
            tail_len = len(MAGIC) + _TAIL.size
            if size < tail_len:
                return {}
            f.seek(size - tail_len)
            tail = f.read(tail_len)
            if tail[-len(MAGIC):] != MAGIC:
                return {}
            (n,) = _TAIL.unpack_from(tail, 0)
            if n > size - tail_len:
                return {}
            METADATA_BYTES.check(n, "metadata trailer size", path)
            f.seek(size - tail_len - n)
            blob = f.read(n)
        try:
            data = loads_json(blob, "metadata trailer", path)
        except ValueError:
            return {}
        return decode(data, path) if isinstance(data, dict) else {}
