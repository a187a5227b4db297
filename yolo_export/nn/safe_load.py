"""The one reader for checkpoint files from elsewhere: a PyTorch zip archive, checked before anything is parsed.

``read_torch_zip(path, unpickler_cls)`` never calls ``torch.load``: torch's legacy/tar paths hand the pickle module's
``load`` an unrestricted unpickler, and its zip path hands TorchScript archives to ``torch.jit.load`` (which runs
their code). Instead:

1. the first bytes must be a zip local-file header (legacy pickles, tar archives and anything else are refused);
2. the central directory must describe a torch archive: one top folder holding ``data.pkl``, ``data/<n>`` storage
   records and torch's small bookkeeping entries, nothing else (a TorchScript program, with ``constants.pkl`` or
   ``code/``, is refused as code); every entry must lie inside the file, storage records must be stored
   uncompressed (torch never compresses them), and ``data.pkl`` must fit the pickle budget;
3. ``data.pkl``'s opcodes are walked first without building anything (``scan_pickle``): a memo slot far beyond
   the ones in use (the unpickler sizes its memo table to the index) is refused, and the items the unpickler would
   make, counting every copy a call or BUILD makes of a container fetched from the memo, against ``PICKLE_ITEMS``;
4. ``data.pkl`` is unpickled by a ``pickle.Unpickler`` whose ``find_class`` is the caller's allow-list;
5. each storage a tensor asks for is checked against its record's size, and all of them together against the
   file's size, before its memory is allocated; the tensors viewing those storages together may hold no more
   elements than the file has bytes (a stride-0 or repeated view would otherwise be materialised by ``.float()``).

Budgets (``yolo_export.limits.Budget``: the error names the variable that raises them): ``PICKLE_BYTES`` (size of
``data.pkl``), ``PICKLE_ITEMS`` (what unpickling it builds) and ``ITEMS`` (items walked in the plain data of a
checkpoint).
"""

from __future__ import annotations

import pickle
import re
import struct
import zipfile
import zlib
from pathlib import Path

from yolo_export.errors import CheckpointError, YoloExportError
from yolo_export.limits import Budget

# Our data.pkl is a few kB, a reference checkpoint's ~0.2 MB (the weights are separate records).
PICKLE_BYTES = Budget("YOLO_EXPORT_MAX_PICKLE_BYTES", 64 << 20, "bytes")
# names + yaml + train args + metrics of a real checkpoint: a few hundred items (22k class names: 44k).
ITEMS = Budget("YOLO_EXPORT_MAX_CHECKPOINT_ITEMS", 100_000, "items")
# Opcodes of data.pkl plus the items calls copy: a reference yolov8x-cls ~40k, with 22k class names ~90k. One item
# costs the unpickler at most ~250 bytes (an empty set), so the default bounds its memory near 250 MB.
PICKLE_ITEMS = Budget("YOLO_EXPORT_MAX_PICKLE_ITEMS", 1_000_000, "items")

ZIP_MAGIC = b"PK\x03\x04"
# a zip local file header: signature, version, flags, method, time, date, CRC, sizes, name and extra field lengths
_LOCAL_HEADER = struct.Struct("<4s2xHH4x4x4x4xHH")
MAX_ENTRIES = 100_000
_BOOKKEEPING = {"byteorder", "version", ".format_version", ".storage_alignment", ".data/version",
                ".data/serialization_id"}
_STORAGE_RE = re.compile(r"data/\d{1,9}")
_TORCHSCRIPT_HINT = ("it is a TorchScript program (code), not a checkpoint; TorchScript files run code when "
                     "loaded: rename it to .torchscript and load it only if you trust where it came from")


class StorageType:
    """What a pickled ``torch.<X>Storage`` global resolves to here: its dtype, nothing callable."""

    def __init__(self, name: str, dtype):
        self.name, self.dtype = name, dtype
        self.itemsize = dtype.itemsize

    def __repr__(self):
        return f"StorageType({self.name})"


def storage_types() -> dict[str, StorageType]:
    import torch

    dtypes = {"HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
              "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
              "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
              "BoolStorage": torch.bool, "UntypedStorage": torch.uint8}
    return {k: StorageType(k, v) for k, v in dtypes.items()}


def sniff(path: Path) -> str:
    """Why a file without the zip magic is not read (one clause), or '' if it starts like a zip."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(ZIP_MAGIC):
        return ""
    if head[:1] == b"\x80" or head[:2] in (b"(d", b"}q", b"(l"):
        return ("is a bare pickle (a legacy, pre-zip PyTorch file); only the zip checkpoint format is read, since "
                "a bare pickle can run code when loaded (re-save it with a current torch.save)")
    if head[257:262] == b"ustar":
        return "is a tar archive (the legacy tar checkpoint format); only the zip checkpoint format is read"
    if not head:
        return "is empty"
    return "is not a PyTorch checkpoint (not a zip archive; truncated or another format?)"


def open_archive(path: Path) -> tuple[zipfile.ZipFile, str]:
    """Open and check the zip structure; return the archive and its top folder (with trailing '/')."""
    why = sniff(path)
    if why:
        raise CheckpointError(f"{path} {why}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:  # 'zip file version 25.5'
        raise CheckpointError(f"{path} is not a valid zip archive ({e}); truncated or corrupt?") from None
    try:
        prefix = _check_entries(path, zf)
    except BaseException:
        zf.close()
        raise
    return zf, prefix


def _check_entries(path: Path, zf: zipfile.ZipFile) -> str:
    infos = zf.infolist()
    if not infos or len(infos) > MAX_ENTRIES:
        raise CheckpointError(f"{path}: {len(infos)} zip entries; a checkpoint has 1 to {MAX_ENTRIES}")
    if not any(i.filename.count("/") == 1 and i.filename.endswith("/data.pkl") for i in infos):
        raise CheckpointError(f"{path} is a zip archive but not a PyTorch checkpoint (no data.pkl in a top folder; "
                              f"it holds {infos[0].filename!r}{' ...' if len(infos) > 1 else ''})")
    prefix = infos[0].filename.split("/", 1)[0] + "/"
    rel = set()
    for info in infos:
        if not info.filename.startswith(prefix) or ".." in info.filename.split("/"):
            raise CheckpointError(f"{path}: zip entry {info.filename!r} is outside the archive's folder {prefix!r}")
        rel.add(info.filename[len(prefix):])
    if "constants.pkl" in rel or any(r.startswith("code/") for r in rel):
        raise CheckpointError(f"refused to load {path}: {_TORCHSCRIPT_HINT}")
    if "data.pkl" not in rel:
        raise CheckpointError(f"{path} is a zip archive but not a PyTorch checkpoint (no {prefix}data.pkl)")
    size = path.stat().st_size
    for info in infos:
        name = info.filename[len(prefix):]
        if name not in _BOOKKEEPING and name != "data.pkl" and not _STORAGE_RE.fullmatch(name):
            raise CheckpointError(f"{path}: unexpected zip entry {info.filename!r} (not part of a PyTorch checkpoint)")
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{path}: zip entry {info.filename!r} is encrypted")
        if info.header_offset + info.compress_size > size:
            raise CheckpointError(f"{path}: zip entry {info.filename!r} claims bytes beyond the end of the file "
                                  "(truncated?)")
        if name != "data.pkl" and (info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size):
            raise CheckpointError(f"{path}: zip entry {info.filename!r} is compressed ({info.compress_size} -> "
                                  f"{info.file_size} bytes); PyTorch stores these uncompressed, so it is refused "
                                  "unread")
    PICKLE_BYTES.check(zf.getinfo(prefix + "data.pkl").file_size, "data.pkl", path)
    return prefix


class _Storages:
    """``persistent_load`` for a torch archive: each storage is checked against its record before allocation, then
    read straight from the file into the tensor's memory (one copy, like torch's own reader) and its CRC-32 checked
    against the central directory's."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, prefix: str):
        self.path, self.zf, self.prefix = path, zf, prefix
        self.loaded: dict[str, object] = {}
        self.size = path.stat().st_size
        self.budget = self.size  # all storages together cannot be larger than the file holding them
        self.elements = self.size  # nor can the tensors viewing them hold more elements than it has bytes
        self.raw = zf.fp  # the archive's own file, opened by path

    def __call__(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise CheckpointError(f"{self.path}: malformed tensor storage reference in data.pkl")
        _, stype, key, _location, numel = pid
        key = key.decode("ascii", "replace") if isinstance(key, bytes) else key
        if not isinstance(stype, StorageType) or not isinstance(key, str) or not _STORAGE_RE.fullmatch(f"data/{key}"):
            raise CheckpointError(f"{self.path}: malformed tensor storage reference in data.pkl")
        if key in self.loaded:
            return self.loaded[key]
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{self.path}: storage {key} declares {numel!r} elements")
        nbytes = numel * stype.itemsize
        try:
            info = self.zf.getinfo(f"{self.prefix}data/{key}")
        except KeyError:
            raise CheckpointError(f"{self.path}: storage record data/{key} is missing (truncated?)") from None
        if nbytes > info.file_size or nbytes > self.budget:
            raise CheckpointError(f"{self.path}: storage {key} declares {nbytes} bytes but its record holds "
                                  f"{info.file_size} (the file has {self.budget} bytes left); refused before "
                                  "allocating")
        self.budget -= nbytes
        st = self._read(info, key, nbytes, stype.dtype)
        self.loaded[key] = st
        return st

    def rebuild_tensor(self, storage, storage_offset, size, stride, *rest):
        """``torch._utils._rebuild_tensor_v2``, once the tensor's element count fits what is left of the file."""
        import math

        import torch

        if not isinstance(size, (tuple, list)) or not all(type(n) is int and n >= 0 for n in size):
            raise CheckpointError(f"{self.path}: malformed tensor size {size!r:.60} in data.pkl")
        self.elements -= math.prod(size)
        if self.elements < 0:
            raise CheckpointError(f"{self.path}: its tensors together hold more elements than the file has bytes "
                                  "(views that repeat a storage); refused before allocating")
        return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, *rest)

    def _data_offset(self, info: zipfile.ZipInfo, key: str) -> int:
        """Where the record's bytes start: after its local header, which must match the central directory."""
        self.raw.seek(info.header_offset)
        head = self.raw.read(_LOCAL_HEADER.size)
        if len(head) != _LOCAL_HEADER.size:
            raise CheckpointError(f"{self.path}: storage record data/{key} ends early (truncated?)")
        magic, flags, method, name_len, extra_len = _LOCAL_HEADER.unpack(head)
        name = self.raw.read(name_len)
        if magic != ZIP_MAGIC or name != info.orig_filename.encode("utf-8" if flags & 0x800 else "cp437") or \
                method != zipfile.ZIP_STORED or flags & 0x1:
            raise CheckpointError(f"{self.path}: the local header of data/{key} does not match the archive's "
                                  "directory (corrupt or crafted)")
        start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        if start + info.file_size > self.size:
            raise CheckpointError(f"{self.path}: storage record data/{key} claims bytes beyond the end of the file "
                                  "(truncated?)")
        return start

    def _read(self, info: zipfile.ZipInfo, key: str, nbytes: int, dtype):
        import torch

        start = self._data_offset(info, key)
        buf = torch.empty(nbytes, dtype=torch.uint8)
        view = memoryview(buf.numpy()) if nbytes else memoryview(b"")
        self.raw.seek(start)
        got = 0
        while got < nbytes:
            n = self.raw.readinto(view[got:])  # a large read goes straight into the tensor, past the file's buffer
            if not n:
                raise CheckpointError(f"{self.path}: storage record data/{key} ends early (truncated?)")
            got += n
        if nbytes == info.file_size and zlib.crc32(view) != info.CRC:
            raise CheckpointError(f"{self.path}: storage record data/{key} fails its CRC-32 check (corrupt?)")
        return torch.storage.TypedStorage(wrap_storage=buf.untyped_storage(), dtype=dtype, _internal=True)


def read_torch_zip(path: str | Path, unpickler_cls: type[pickle.Unpickler]):
    """Unpickle a checked torch zip archive with ``unpickler_cls`` (its ``find_class`` is the allow-list)."""
    path = Path(path)
    zf, prefix = open_archive(path)
    with zf:
        try:
            return _unpickle(path, zf, prefix, unpickler_cls)
        except YoloExportError:
            raise
        except RecursionError:
            raise CheckpointError(f"{path}: data.pkl nests too deeply") from None
        except MemoryError:
            raise CheckpointError(f"{path}: data.pkl needs more memory than allowed") from None
        except Exception as e:  # noqa: BLE001 - a corrupt archive or pickle raises anything; one line says so
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"cannot read checkpoint {path}: {msg}") from None


def _unpickle(path: Path, zf: zipfile.ZipFile, prefix: str, unpickler_cls):
    import io

    order = prefix + "byteorder"
    if order in zf.namelist():
        with zf.open(order) as f:
            if f.read(16).strip() not in (b"little", b""):
                raise CheckpointError(f"{path}: a big-endian checkpoint is not supported")
    import torch

    limit = zf.getinfo(prefix + "data.pkl").file_size
    with zf.open(prefix + "data.pkl") as f:
        data = f.read(limit + 1)
    scan_pickle(data, path)
    storages = _Storages(path, zf, prefix)
    rebuild = torch._utils._rebuild_tensor_v2

    class Checked(unpickler_cls):
        def find_class(self, module, name):  # the caller's allow-list decides; an admitted tensor rebuild is checked
            found = super().find_class(module, name)
            return storages.rebuild_tensor if found is rebuild else found

    up = Checked(io.BytesIO(data))
    up.persistent_load = storages
    return up.load()


class _Cell:
    """What the scan knows of one object the unpickler would build: its length (items, characters or bytes) and,
    for a tuple, its members (a call's arguments)."""

    __slots__ = ("n", "kids")

    def __init__(self, n: int = 0, kids: list | None = None):
        self.n, self.kids = n, kids


_MARK, _LEAF = _Cell(), _Cell()      # a MARK on the stack; any scalar (never grown, never copied from)
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}
_GROW = {"APPEND": 1, "APPENDS": 1, "SETITEM": 2, "SETITEMS": 2, "ADDITEMS": 1}   # items per stack entry
_CALLS = {"REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "OBJ", "INST"}            # may copy what they are given


def scan_pickle(data: bytes, where) -> int:
    """Walk ``data``'s opcodes without building anything; the items the unpickler would make, within
    ``PICKLE_ITEMS``. A call or BUILD is charged the length of every container it is handed (fetched from the memo,
    one list can be handed to a thousand ``set(...)`` calls); a memo slot beyond the next free one is refused."""
    import pickletools

    limit, items = PICKLE_ITEMS.limit, 0
    stack: list[_Cell] = []
    memo: dict[int, _Cell] = {}
    for op, arg, _pos in pickletools.genops(data):
        items += 1
        name = op.name
        if name in _PUTS:
            slot = len(memo) if name == "MEMOIZE" else arg
            if slot > len(memo):
                raise CheckpointError(f"{where}: data.pkl stores memo slot {slot:,} before slot {len(memo):,} "
                                      "exists (the unpickler would size its memo table to it); refused")
            memo[slot] = stack[-1] if stack else _LEAF
        elif name in _GETS:
            stack.append(memo.get(arg, _LEAF))
        elif not op.stack_before and op.stack_after == [pickletools.anyobject]:   # a scalar, a global
            stack.append(_Cell(len(arg)) if isinstance(arg, (str, bytes)) else _LEAF)
        else:
            items += _step(op, arg, stack)
        if items > limit:
            PICKLE_ITEMS.check(items, "what data.pkl builds", where)
    return items


def _step(op, arg, stack: list) -> int:
    """Apply one container, call or stack opcode to the scan's stack; the items it copies."""
    import pickletools

    if op.name in ("MARK", "DUP"):
        stack.append(_MARK if op.name == "MARK" else (stack[-1] if stack else _LEAF))
        return 0
    before, marked = op.stack_before, []
    if pickletools.markobject in before:
        while stack and stack[-1] is not _MARK:
            marked.append(stack.pop())
        if stack:
            stack.pop()
        marked.reverse()
        before = before[:before.index(pickletools.markobject)]
    below = [stack.pop() if stack else _LEAF for _ in before][::-1]
    if op.name in _GROW:
        grown = below[0] if below and below[0] not in (_LEAF, _MARK) else _Cell()
        grown.n += (len(marked) or len(below) - 1) // _GROW[op.name]
        stack.append(grown)
        return 0
    copied = sum(c.n + sum(k.n for k in c.kids or ()) for c in below[1:] + marked) if op.name in _CALLS else 0
    n = len(arg) if isinstance(arg, (str, bytes)) else len(marked) // (2 if op.name == "DICT" else 1)
    for _ in op.stack_after:
        stack.append(_Cell(n + copied, marked or below if "TUPLE" in op.name else None))
    return copied


class ItemCounter:
    """Counts items while walking data read from a file: shared references count each time they are reached, so a
    pickle memo "billion laughs" is refused after ``items`` steps instead of being expanded."""

    def __init__(self, where: str, items: int | None = None, depth: int = 32):
        self.where = where
        self.items = int(items or ITEMS.limit)
        self.depth = depth
        self.n = 0

    def step(self, depth: int, field: str) -> None:
        self.n += 1
        if self.n > self.items:
            raise CheckpointError(f"{self.where}: '{field}' holds more than {self.items} items (shared references "
                                  "count each time they are reached); refused before expanding it "
                                  "(YOLO_EXPORT_MAX_CHECKPOINT_ITEMS raises the limit)")
        if depth > self.depth:
            raise CheckpointError(f"{self.where}: '{field}' nests deeper than {self.depth} levels")


_SCALARS = (str, int, float, bool, type(None))


def plain_data(x, budget: ItemCounter, field: str, *, strict: bool, depth: int = 0):
    """``x`` as dict/list/str/int/float/bool/None/Tensor, within ``budget``.

    ``strict``: anything else is refused (our own format holds nothing else). Otherwise (metadata of an imported
    file) numpy scalars become numbers, namespaces become dicts and other objects a ``<TypeName>`` placeholder;
    nothing from the file is ever called or printed through its own ``__repr__``.
    """
    import torch

    budget.step(depth, field)
    if isinstance(x, _SCALARS) or isinstance(x, torch.Tensor):
        return x
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            budget.step(depth + 1, field)
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                if strict:
                    raise CheckpointError(f"{budget.where}: '{field}' has a {type(k).__name__} key; refused")
                k = repr(k) if isinstance(k, (float, bool, type(None))) else f"<{type(k).__name__}>"
            out[k] = plain_data(v, budget, field, strict=strict, depth=depth + 1)
        return out
    if isinstance(x, (list, tuple)):
        return [plain_data(v, budget, field, strict=strict, depth=depth + 1) for v in x]
    if strict:
        raise CheckpointError(f"{budget.where}: '{field}' holds a {type(x).__name__}, which a yolo-export checkpoint "
                              "never contains; refused")
    return _loose(x, budget, field, depth)


def _loose(x, budget: ItemCounter, field: str, depth: int):
    import enum

    import numpy as np

    if isinstance(x, np.generic) and x.dtype.kind in "biuf":
        return x.item()
    if isinstance(x, enum.Enum) and isinstance(x.value, _SCALARS):
        return x.value
    if isinstance(x, Path):
        return str(x)
    d = getattr(x, "__dict__", None)
    if type(x).__name__ == "IterableSimpleNamespace" and isinstance(d, dict):
        return plain_data(d, budget, field, strict=False, depth=depth + 1)
    return f"<{type(x).__name__}>"
