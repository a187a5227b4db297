"""Budgets for everything read from a file before it is trusted, and the parsers that respect them.

Each budget has a default that admits every real model and input and an environment variable that raises it; a
violation raises :class:`~yolo_export.errors.LimitError` with one line naming the field, the limit and that variable.
Sizes are checked *before* anything is allocated: a declared size is compared with its budget first, a YAML document
is composed and its expanded size counted before any Python object is built, nesting depth is counted on the text.
Nothing here imports more than the standard library (and PyYAML when a YAML document is read).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from yolo_export.errors import FileError, LimitError, MetadataError


@dataclass(frozen=True)
class Budget:
    env: str
    default: int
    what: str

    @property
    def limit(self) -> int:
        raw = os.environ.get(self.env, "").strip()
        if not raw:
            return self.default
        try:
            value = int(float(raw))
        except ValueError:
            raise LimitError(f"{self.env}={raw!r} is not a number") from None
        if value < 1:
            raise LimitError(f"{self.env}={raw!r} must be a positive number")
        return value

    def check(self, value: int, field: str, source: str | os.PathLike | None = None) -> int:
        """``value`` if within the budget, else one line naming ``field``, the limit and the override."""
        limit = self.limit
        if value > limit:
            raise LimitError(f"{_where(source)}{field} is {value:,} {self.what}, over the limit of {limit:,} "
                             f"(set {self.env} to raise it)")
        return value


# The largest metadata a real export writes is ~1 MB (22k ImageNet-21k names); 16 MiB leaves room for any label set.
METADATA_BYTES = Budget("YOLO_EXPORT_MAX_METADATA_BYTES", 16 << 20, "bytes")
# A TF.js model.json holds the whole graph topology (yolov8x-cls: about 0.3 MB).
MODEL_JSON_BYTES = Budget("YOLO_EXPORT_MAX_MODEL_JSON_BYTES", 64 << 20, "bytes")
# Real metadata nests 3 levels (args, preprocess, verification); 32 admits any tool's additions.
DEPTH = Budget("YOLO_EXPORT_MAX_NESTING", 32, "levels deep")
# Nodes of a YAML/JSON document after alias expansion: 22k names are ~45k nodes.
NODES = Budget("YOLO_EXPORT_MAX_NODES", 1_000_000, "nodes")
# Class names: ImageNet-21k has 21,843.
CLASSES = Budget("YOLO_EXPORT_MAX_NC", 100_000, "classes")
# imgsz, preprocess resize and crop: classifiers train at 224-640; 4096 keeps one float32 input under 200 MB.
IMGSZ = Budget("YOLO_EXPORT_MAX_IMGSZ", 4096, "pixels")
# A fixed batch named in metadata or a graph: predict pads every chunk to it.
BATCH = Budget("YOLO_EXPORT_MAX_BATCH", 1024, "images")
# Address space a runtime may add while it first loads and runs an artefact it does not check (in a child process:
# isolation.try_in_child); yolov8x-cls at 640 needs well under 2 GiB.
RUNTIME_MEMORY = Budget("YOLO_EXPORT_MAX_RUNTIME_MEMORY", 8 << 30, "bytes")
# A download whose size the manifest does not state (yolov8x-cls: 57.4 M parameters, ~115 MB in fp16).
DOWNLOAD_BYTES = Budget("YOLO_EXPORT_MAX_DOWNLOAD_BYTES", 2 << 30, "bytes")


def _where(source) -> str:
    return f"{source}: " if source else ""


ALL = (METADATA_BYTES, MODEL_JSON_BYTES, DEPTH, NODES, CLASSES, IMGSZ, BATCH, RUNTIME_MEMORY, DOWNLOAD_BYTES)

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', re.S)
_NOT_BRACKET = re.compile(rb"[^\[\]{}()]+")


def text_depth(text: str | bytes) -> int:
    """Deepest bracket nesting of a JSON / Python-literal / YAML-flow text, outside quoted strings (no parsing)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    data = _NOT_BRACKET.sub(b"", _STRING.sub(b"", data))
    depth = deepest = 0
    for c in data:
        if c in b"[{(":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(depth - 1, 0)
    return deepest


def check_text(text: str | bytes, field: str, source=None, budget: Budget | None = None) -> None:
    """Size and nesting budgets of a serialised document, before it is parsed."""
    n = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    (budget or METADATA_BYTES).check(n, f"{field} size", source)
    DEPTH.check(text_depth(text), f"{field} nesting", source)


def obj_depth(obj, limit: int | None = None) -> int:
    """Nesting depth of decoded containers (iterative; stops counting past ``limit``)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list, tuple)):
            deepest = max(deepest, d)
            if limit is not None and deepest > limit:
                return deepest
            items = o.values() if isinstance(o, dict) else o
            stack.extend((x, d + 1) for x in items)
    return deepest


def loads_json(text: str | bytes, field: str = "metadata", source=None, budget: Budget | None = None):
    """``json.loads`` after the size and depth budgets; a syntax error raises ``ValueError`` as json does."""
    import json

    check_text(text, field, source, budget)
    return json.loads(text)


def load_yaml(text: str | bytes, field: str = "metadata.yaml", source=None):
    """``yaml.safe_load`` with budgets: size, nesting depth and alias-expanded node count are checked on the composed
    node graph, before any Python object is constructed (a "billion laughs" document is refused, not expanded)."""
    import yaml

    n = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    METADATA_BYTES.check(n, f"{field} size", source)
    loader = _budget_loader(yaml)(text)
    try:
        try:
            node = loader.get_single_node()
        except LimitError as e:
            raise LimitError(f"{_where(source)}{e}") from None
        if node is None:
            return None
        if _expanded_nodes(node, field, source) > NODES.limit:
            raise LimitError(f"{_where(source)}{field} expands (through its aliases) to more than {NODES.limit:,} "
                             f"nodes (set {NODES.env} to raise the limit)")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _budget_loader(yaml):
    class BudgetLoader(yaml.SafeLoader):
        """SafeLoader that refuses to compose deeper than the depth budget (checked as it descends)."""

        _depth = 0

        def compose_node(self, parent, index):
            self._depth += 1
            try:
                DEPTH.check(self._depth, "YAML nesting")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    return BudgetLoader


def _expanded_nodes(root, field, source) -> int:
    """How many nodes the document has with every alias expanded, counted over the shared graph (memoised)."""
    import yaml

    sizes: dict[int, int] = {}
    limit = NODES.limit
    stack = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = _children(node, yaml)
            sizes[key] = min(1 + sum(sizes[id(k)] for k in kids), limit + 1)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise MetadataError(f"{_where(source)}{field} refers to itself (a recursive alias)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node, yaml) if id(k) not in sizes)
    return sizes[id(root)]


def _children(node, yaml) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    return []


def is_zip(path) -> bool:
    """``zipfile.is_zipfile`` that answers False instead of raising for a crafted end record (a zip64 locator that
    names several disks makes the standard library raise ``BadZipFile`` from its yes/no check)."""
    import zipfile

    try:
        return zipfile.is_zipfile(path)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError):
        return False


def zip_member(path, match, field: str):
    """Bytes of the first member of the zip at ``path`` whose name ``match(name)`` accepts; ``None`` when the file is
    not a zip or has no such member. The declared size is checked against the metadata budget from the central
    directory before anything is read, and no more than the budget is ever inflated (a lying header cannot help)."""
    import zipfile

    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError):
        return None                                  # no archive at all
    except Exception as e:  # noqa: BLE001 - a malformed directory: bad names, versions, zip64 records...
        raise MetadataError(f"{path}: unreadable {field} ({type(e).__name__}: {str(e)[:80]})") from None
    try:
        with z:
            info = next((i for i in z.infolist() if match(i.filename)), None)
            if info is None:
                return None
            METADATA_BYTES.check(info.file_size, f"{field} (declared size)", path)
            with z.open(info) as f:
                blob = f.read(METADATA_BYTES.limit + 1)
        METADATA_BYTES.check(len(blob), field, path)
        return blob
    except LimitError:
        raise
    except Exception as e:  # noqa: BLE001 - zlib.error, lzma/bz2 errors, BadZipFile, EOFError...: all "corrupt"
        raise MetadataError(f"{path}: unreadable {field} ({type(e).__name__}: {str(e)[:80]})") from None


# ------------------------------------------------------------------------------------------ paths named by files
def contained(folder, name, field: str, source=None):
    """``folder / name`` resolved, if it stays inside ``folder``; else one line naming ``field``.

    For paths that a file names (TF.js weight shards, ONNX external data, companion files): absolute paths, ``..``
    and links that lead out of the artefact's folder are refused."""
    from pathlib import Path

    base = Path(folder).resolve()
    text = str(name)
    if not text or "\0" in text:
        raise FileError(f"{_where(source)}{field} names an empty or invalid path")
    target = (base / text).resolve()
    if Path(text).is_absolute() or not target.is_relative_to(base):
        raise FileError(f"{_where(source)}{field} {text!r} points outside the model folder {base}; "
                        "refusing to read it")
    return target


def check_folder(folder, max_entries: int = 100_000) -> None:
    """Refuse an artefact folder holding a link that leads outside it (its files are read as model data)."""
    from pathlib import Path

    base = Path(folder).resolve()
    n = 0
    for root, dirs, files in os.walk(base, followlinks=False):
        for name in dirs + files:
            n += 1
            if n > max_entries:
                raise LimitError(f"{folder}: more than {max_entries:,} files in a model folder")
            p = Path(root) / name
            if p.is_symlink() and not p.resolve().is_relative_to(base):
                raise FileError(f"{folder}: {p.relative_to(base)} is a link to {p.resolve()}, outside the "
                                "model folder; refusing to read it")
