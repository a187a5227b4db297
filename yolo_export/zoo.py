"""The model zoo: names that resolve through ``weights_manifest.json`` to verified, cached checkpoints.

``resolve("yolov8s-cls.pt")`` returns the path of a checkpoint in our safe format, downloading it on first use:

- the manifest (packaged; ``$YOLO_EXPORT_MANIFEST`` points at another one) gives each model's URLs, sha256, size,
  architecture, preprocessing size, published accuracy and source format; it is checked against its JSON Schema;
- the download streams into ``<file>.part`` with a progress bar on stderr, resumes a partial file with an HTTP
  Range request, retries transient failures with back-off, and checks size and sha256 *before* the file is moved
  into place with one atomic rename; a file that fails a check is deleted;
- an Ultralytics-format file (a pickled model) is converted once, through the restricted importer, into our
  plain-dict format; the cache holds ``zoo/<name>.pt`` and ``zoo/<name>.json`` (what was fetched: URL, sha256,
  size, whether the sha256 was checked against a pinned value);
- where the manifest has no sha256 yet, nothing is claimed: the record says ``unverified`` and a warning says so.

Environment: ``YOLO_EXPORT_CACHE`` / ``XDG_CACHE_HOME`` (cache dir), ``YOLO_EXPORT_OFFLINE=1`` (cache only),
``YOLO_EXPORT_MIRROR`` (base URL(s) of your own copies, replacing the manifest's URLs), ``YOLO_EXPORT_MANIFEST``
(another manifest), ``YOLO_EXPORT_RETRIES`` and ``YOLO_EXPORT_TIMEOUT`` (seconds).

Only the standard library talks HTTP here (urllib, so the usual ``https_proxy`` variables apply).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from yolo_export.errors import (
    ArgumentError, CheckpointError, CheckpointNotFound, DownloadError, FileError, LimitError, YoloExportError,
)
from yolo_export.utils import LOGGER, atomic_write_bytes, cache_dir, nearest, remove

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGED_MANIFEST = PACKAGE_DIR / "weights_manifest.json"
SCHEMA_PATH = PACKAGE_DIR / "weights_manifest.schema.json"

RECORD_VERSION = 1
# How a reference-format download is converted into the cache (recorded as ``conversion_version``): 1 assumed
# BatchNorm eps 1e-3 / momentum 0.03 for every layer; 2 takes every computation attribute from the file itself.
# A cached conversion older than this is re-derived from the original download, never kept.
CONVERSION_VERSION = 2
CHUNK = 1 << 16
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
_TRUE = {"1", "true", "yes", "on"}


# ------------------------------------------------------------------------------------------------ manifest
@dataclass(frozen=True)
class Entry:
    """One model of the zoo, as the manifest describes it."""

    name: str
    file: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None
    checksum_status: str
    source_format: str
    task: str
    arch: str
    scale: str
    nc: int
    imgsz: int
    params: int
    dataset: str
    metrics: dict
    license: str
    release: str | None = None
    notes: str | None = None
    url_sources: tuple[str, ...] = ()
    params_source: str | None = None
    published: dict | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def pinned(self) -> bool:
        return self.checksum_status == "verified" and bool(self.sha256)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("name", "file", "sha256", "size", "checksum_status", "source_format",
                                           "task", "arch", "scale", "nc", "imgsz", "params", "dataset", "license",
                                           "release", "notes", "params_source")}
        d["urls"], d["url_sources"] = list(self.urls), list(self.url_sources)
        d["metrics"] = dict(self.metrics)
        d["published"] = dict(self.published) if self.published else None
        return d


def manifest_path() -> Path:
    env = os.environ.get("YOLO_EXPORT_MANIFEST")
    return Path(env).expanduser() if env else PACKAGED_MANIFEST


def load_manifest(path: str | Path | None = None) -> dict[str, Entry]:
    """Read and validate a manifest (default: ``manifest_path()``); returns name -> Entry in file order."""
    path = Path(path) if path else manifest_path()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileError(f"weights manifest not found: {path} (check YOLO_EXPORT_MANIFEST)") from None
    except (OSError, ValueError) as e:
        raise YoloExportError(f"cannot read weights manifest {path}: {str(e).splitlines()[0]}") from None
    errors = validate(doc, load_schema())
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise YoloExportError(f"invalid weights manifest {path}: {errors[0]}{more}")
    bad = _unsourced(doc)
    if bad:
        raise YoloExportError(f"invalid weights manifest {path}: {bad}")
    out = {}
    for name, e in doc["models"].items():
        known = set(Entry.__dataclass_fields__) - {"name", "urls", "url_sources", "extra"}
        out[name] = Entry(name=name, urls=tuple(e["urls"]), url_sources=tuple(e["url_sources"]),
                          **{k: v for k, v in e.items() if k in known},
                          extra={k: v for k, v in e.items() if k not in known and k not in ("urls", "url_sources")})
    return out


def _unsourced(doc: dict) -> str | None:
    """Every figure names its source: each ``source`` id is a key of ``sources``, one per URL. None when so."""
    ids = set(doc["sources"])
    for name, e in doc["models"].items():
        if len(e["url_sources"]) != len(e["urls"]):
            return f"$.models.{name}.url_sources: {len(e['url_sources'])} source(s) for {len(e['urls'])} URL(s)"
        named = {"url_sources": e["url_sources"], "params_source": [e["params_source"]],
                 "metrics.source": [e["metrics"]["source"]],
                 "published.source": [e["published"]["source"]] if e.get("published") else []}
        for where, sids in named.items():
            missing = [s for s in sids if s not in ids]
            if missing:
                return f"$.models.{name}.{where}: unknown source '{missing[0]}' (sources: {', '.join(sorted(ids))})"
    return None


def manifest_sources(path: str | Path | None = None) -> dict:
    """The manifest's ``sources``: id -> {title, url?, note?} (what each figure's ``source`` field names)."""
    load_manifest(path)
    return json.loads((Path(path) if path else manifest_path()).read_text(encoding="utf-8"))["sources"]


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def entry(name: str, manifest: dict[str, Entry] | None = None) -> Entry:
    """The manifest entry for ``yolov8n-cls``, ``yolov8n-cls.pt`` (any case); a clear error with a suggestion."""
    models = manifest if manifest is not None else load_manifest()
    key = _key(name)
    for e in models.values():
        if key in (e.name.lower(), e.file.lower(), _key(e.file)):
            return e
    hint = nearest(key, list(models))
    raise ArgumentError(f"unknown zoo model '{name}'" + (f"; did you mean '{hint}'?" if hint else "")
                          + f" (zoo: {', '.join(models)})")


def _key(name: str) -> str:
    n = str(name).strip().lower()
    return n[:-3] if n.endswith(".pt") else n


# ----------------------------------------------------------------------------- a small JSON Schema checker
def validate(doc, schema: dict) -> list[str]:
    """Check ``doc`` against the subset of JSON Schema (2020-12) the manifest schema uses; returns error lines.

    Supported: type, const, enum, pattern, minLength, minimum, maximum, required, properties,
    additionalProperties, propertyNames, minProperties, items, minItems, $ref to ``#/$defs/...``, allOf, if/then.
    An unsupported keyword raises, so that the schema cannot silently say more than is checked.
    """
    errors: list[str] = []
    _check(doc, schema, schema, "$", errors)
    return errors


_ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs", "$comment", "default", "examples"}
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


_KEYWORDS = _ANNOTATIONS | {"$ref", "type", "const", "enum", "pattern", "minLength", "minimum", "maximum", "required",
                            "properties", "additionalProperties", "propertyNames", "minProperties", "items",
                            "minItems", "allOf", "if", "then"}


def _check(v, s: dict, root: dict, at: str, errors: list[str]) -> None:
    if "$ref" in s:
        _check(v, _resolve_ref(s["$ref"], root), root, at, errors)
    unknown = set(s) - _KEYWORDS
    if unknown:
        raise ValueError(f"schema keyword(s) not supported by this checker: {', '.join(sorted(unknown))}")
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_TYPES[t](v) for t in types):
            errors.append(f"{at}: expected {' or '.join(types)}, got {_json_type(v)}")
            return
    _check_value(v, s, at, errors)
    if isinstance(v, dict):
        _check_object(v, s, root, at, errors)
    if isinstance(v, list):
        _check_array(v, s, root, at, errors)
    for sub in s.get("allOf", []):
        _check(v, sub, root, at, errors)
    if "if" in s:
        trial: list[str] = []
        _check(v, s["if"], root, at, trial)
        if not trial and "then" in s:
            _check(v, s["then"], root, at, errors)


def _resolve_ref(ref: str, root: dict) -> dict:
    if not ref.startswith("#/"):
        raise ValueError(f"unsupported $ref {ref}")
    target = root
    for part in ref[2:].split("/"):
        target = target[part]
    return target


def _check_value(v, s: dict, at: str, errors: list[str]) -> None:
    """const, enum, and the string and number bounds."""
    if "const" in s and not _same(v, s["const"]):
        errors.append(f"{at}: must be {json.dumps(s['const'])}, got {json.dumps(v)}")
    if "enum" in s and not any(_same(v, c) for c in s["enum"]):
        errors.append(f"{at}: must be one of {', '.join(json.dumps(c) for c in s['enum'])}, got {json.dumps(v)}")
    if isinstance(v, str):
        if "pattern" in s and not re.search(_ecma(s["pattern"]), v):
            errors.append(f"{at}: {v!r} does not match {s['pattern']}")
        if "minLength" in s and len(v) < s["minLength"]:
            errors.append(f"{at}: shorter than {s['minLength']} characters")
    if _TYPES["number"](v):
        if "minimum" in s and v < s["minimum"]:
            errors.append(f"{at}: {v} is below the minimum {s['minimum']}")
        if "maximum" in s and v > s["maximum"]:
            errors.append(f"{at}: {v} is above the maximum {s['maximum']}")


def _check_object(v: dict, s: dict, root: dict, at: str, errors: list[str]) -> None:
    for k in s.get("required", []):
        if k not in v:
            errors.append(f"{at}: missing required key '{k}'")
    if "minProperties" in s and len(v) < s["minProperties"]:
        errors.append(f"{at}: needs at least {s['minProperties']} entries")
    props = s.get("properties", {})
    for k, sub in v.items():
        where = f"{at}.{k}"
        if "propertyNames" in s:
            _check(k, s["propertyNames"], root, f"{where} (name)", errors)
        if k in props:
            _check(sub, props[k], root, where, errors)
        elif s.get("additionalProperties") is False:
            errors.append(f"{at}: unexpected key '{k}'")
        elif isinstance(s.get("additionalProperties"), dict):
            _check(sub, s["additionalProperties"], root, where, errors)


def _check_array(v: list, s: dict, root: dict, at: str, errors: list[str]) -> None:
    if "minItems" in s and len(v) < s["minItems"]:
        errors.append(f"{at}: needs at least {s['minItems']} item(s)")
    if "items" in s:
        for i, item in enumerate(v):
            _check(item, s["items"], root, f"{at}[{i}]", errors)


def _ecma(pattern: str) -> str:
    """A JSON Schema (ECMA-262) pattern for Python's ``re``: its ``$`` ends the text, where Python's would also match
    before a final newline (so ``"name\\n"`` would pass ``^[a-z]+$``)."""
    return re.sub(r"(?<!\\)\$", r"\\Z", pattern)


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _json_type(v) -> str:
    for t in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[t](v):
            return t
    return type(v).__name__


# ------------------------------------------------------------------------------------------- settings
def offline_mode(offline: bool | None = None) -> bool:
    if offline is not None:
        return bool(offline)
    return os.environ.get("YOLO_EXPORT_OFFLINE", "").strip().lower() in _TRUE


def mirror_bases(mirror: str | list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Base URLs that replace the manifest's URLs: the ``mirror`` argument, else ``$YOLO_EXPORT_MIRROR``."""
    src = mirror if mirror is not None else os.environ.get("YOLO_EXPORT_MIRROR", "")
    parts = src if isinstance(src, (list, tuple)) else re.split(r"[\s,]+", src)
    return [p.strip().rstrip("/") for p in parts if p and p.strip()]


def urls_for(e: Entry, mirror=None) -> list[str]:
    bases = mirror_bases(mirror)
    return [f"{b}/{urllib.parse.quote(e.file)}" for b in bases] if bases else list(e.urls)


def _env_number(name: str, default, cast):
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return cast(raw)
    except ValueError:
        raise LimitError(f"{name}={raw!r} is not a number") from None


def zoo_dir() -> Path:
    return cache_dir() / "zoo"


def cached_paths(e: Entry) -> tuple[Path, Path]:
    """(checkpoint, record) paths of ``e`` in the cache."""
    d = zoo_dir()
    return d / f"{e.name}.pt", d / f"{e.name}.json"


# ------------------------------------------------------------------------------------------- downloader
class _Transient(Exception):
    """Worth another try (connection lost, timeout, 5xx)."""


class _Fatal(Exception):
    """Not worth another try from this URL (404, size mismatch); the next mirror may still work."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(urls, dst: str | Path, *, sha256: str | None = None, size: int | None = None,
                  retries: int | None = None, backoff: float = 1.0, timeout: float | None = None,
                  progress: bool = True, desc: str | None = None) -> dict:
    """Download one file from the first of ``urls`` that works into ``dst``, verified, atomically.

    Streams into ``dst.part`` (resumed with an HTTP Range request when a previous try left one), retries transient
    failures ``retries`` times per URL with exponential back-off, then checks ``size`` and ``sha256`` (when given)
    before one ``os.replace`` moves the file to ``dst``. A file failing a check is deleted, never kept.
    Returns ``{"url", "sha256", "size", "verified"}``; raises ``DownloadError`` with one line otherwise.
    """
    dst = Path(dst)
    urls = [urls] if isinstance(urls, str) else list(urls)
    retries = _env_number("YOLO_EXPORT_RETRIES", 3, int) if retries is None else int(retries)
    timeout = _env_number("YOLO_EXPORT_TIMEOUT", 30.0, float) if timeout is None else float(timeout)
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    side = dst.with_name(dst.name + ".part.json")
    desc = desc or dst.name
    failures: list[str] = []
    for url in urls:
        error = None
        for attempt in range(retries + 1):
            try:
                _fetch_once(url, part, side, size=size, timeout=timeout, progress=progress, desc=desc)
                error = None
                break
            except _Fatal as e:
                error = str(e)
                break
            except _Transient as e:
                error = str(e)
                if attempt < retries:
                    wait = backoff * 2 ** attempt
                    LOGGER.info(f"{desc}: {e}; retrying in {wait:.1f}s ({attempt + 1}/{retries})")
                    time.sleep(wait)
        if error is not None:
            failures.append(error)
            continue
        got = part.stat().st_size
        if size is not None and got != size:
            _discard(part, side)
            failures.append(f"size mismatch from {_short(url)}: got {got} bytes, expected {size}; the file was "
                            "deleted")
            continue
        digest = sha256_file(part)
        if sha256 and digest != sha256.lower():
            _discard(part, side)
            failures.append(f"checksum mismatch from {_short(url)}: sha256 {digest[:16]}..., expected "
                            f"{sha256.lower()[:16]}...; the file was deleted")
            continue
        os.replace(part, dst)
        remove(side)
        return {"url": url, "sha256": digest, "size": got, "verified": bool(sha256)}
    tried = f" (tried {len(urls)} URLs; first: {failures[0]})" if len(urls) > 1 else ""
    raise DownloadError(f"cannot download {desc}: {failures[-1] if failures else 'no URL to try'}{tried}")


def _discard(*paths: Path) -> None:
    for p in paths:
        remove(p)


def _short(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return f"{u.scheme}://{u.netloc}{u.path}" if u.netloc else url


def _fetch_once(url: str, part: Path, side: Path, *, size, timeout, progress, desc) -> None:
    """One HTTP request: continue ``part`` from where it stops (Range) or start it over; raise on failure."""
    state = _read_json(side)
    offset = part.stat().st_size if part.exists() and state.get("url") == url else 0
    if offset == 0:
        _discard(part, side)
    resp = _open(url, offset, state.get("validator"), timeout, part, side)
    with contextlib.closing(resp):
        offset, mode, total = _extent(resp, url, offset, part, side)
        if size is not None and total is not None and total != size:
            _discard(part, side)
            raise _Fatal(f"size mismatch: {_short(url)} offers {total} bytes, the manifest expects {size}")
        cap = _download_cap(size)
        if total is not None and total > cap:
            _discard(part, side)
            raise _Fatal(_too_big(url, f"offers {total:,} bytes", size))
        validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        atomic_write_bytes(side, json.dumps({"url": url, "validator": validator, "total": total}).encode())
        if offset:
            LOGGER.info(f"{desc}: resuming at {offset / 1e6:.1f} MB")
        got = _stream(resp, url, part, side, mode, offset, total, cap, size, progress, desc, timeout)
        if total is not None and got < total:
            raise _Transient(f"connection closed after {got} of {total} bytes from {_short(url)}")
        if total is not None and got > total:
            _discard(part, side)
            raise _Fatal(f"{_short(url)} sent {got} bytes, more than the {total} it announced")


def _open(url: str, offset: int, validator: str | None, timeout: float, part: Path, side: Path):
    """The response to a GET of ``url`` (from byte ``offset`` when > 0); failures as ``_Transient``/``_Fatal``."""
    headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            headers["If-Range"] = validator
    req = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - http(s)/file URLs from the manifest
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            _discard(part, side)
            raise _Transient(f"{_short(url)} cannot resume at byte {offset} (HTTP 416); starting over") from None
        msg = f"HTTP {e.code} {e.reason} from {_short(url)}"
        raise (_Transient if e.code in _TRANSIENT_HTTP else _Fatal)(msg) from None
    except urllib.error.URLError as e:
        reason = e.reason if not isinstance(e.reason, OSError) else (e.reason.strerror or str(e.reason))
        host = urllib.parse.urlsplit(url).netloc or url
        if urllib.parse.urlsplit(url).scheme == "file":
            raise _Fatal(f"{url}: {reason}") from None
        raise _Transient(f"cannot reach {host} ({reason}); check the network or proxy, or set YOLO_EXPORT_MIRROR "
                         "to a mirror you can reach") from None
    except TimeoutError as e:
        raise _Transient(f"no answer from {_short(url)} within {timeout:g}s ({e})") from None
    except (ConnectionError, OSError, http.client.HTTPException) as e:
        raise _Transient(f"connection to {_short(url)} failed ({type(e).__name__}: {e})") from None


def _extent(resp, url: str, offset: int, part: Path, side: Path) -> tuple[int, str, int | None]:
    """(offset, file mode, total size or None) from the response: a 206 continues ``part``, anything else restarts."""
    status = getattr(resp, "status", None) or 200
    if status == 206:
        m = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != offset:
            _discard(part, side)
            raise _Transient(f"{_short(url)} answered the resume request with a wrong range; starting over")
        return offset, "ab", (int(m.group(3)) if m.group(3) != "*" else None)
    cl = resp.headers.get("Content-Length")
    return 0, "wb", (int(cl) if cl and cl.isdigit() else None)


def _stream(resp, url: str, part: Path, side: Path, mode: str, offset: int, total, cap: int, size, progress,
            desc, timeout: float) -> int:
    """Copy the response body onto ``part`` (never past ``cap`` bytes) with a progress bar; the bytes it now holds.

    Every ``timeout`` seconds must bring at least one chunk: a server answering each read in time but with a few
    bytes (so that the transfer would take days) is a stalled download, tried again like a lost connection."""
    from tqdm import tqdm

    got = offset
    read = getattr(resp, "read1", resp.read)  # what has arrived, not a wait for a whole chunk
    since, at = time.monotonic(), got
    with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=desc, disable=None if progress else True, leave=False,
                                     dynamic_ncols=True) as bar:
        while True:
            try:
                chunk = read(CHUNK)
            except Exception as e:  # noqa: BLE001 - IncompleteRead, reset, timeout: all mean "try again"
                raise _Transient(f"connection lost after {got} bytes from {_short(url)} "
                                 f"({type(e).__name__})") from None
            if not chunk:
                return got
            if time.monotonic() - since >= timeout:
                if got + len(chunk) - at < CHUNK:
                    raise _Transient(f"download from {_short(url)} stalled: {got + len(chunk) - at} bytes in "
                                     f"{timeout:g}s (after {got} bytes)")
                since, at = time.monotonic(), got + len(chunk)
            if got + len(chunk) > cap:
                f.close()
                _discard(part, side)
                raise _Fatal(_too_big(url, f"sent more than {cap:,} bytes", size))
            f.write(chunk)
            got += len(chunk)
            bar.update(len(chunk))


def _download_cap(size: int | None) -> int:
    """Most bytes one download may write: the manifest's size where it states one, else the download budget."""
    from yolo_export.limits import DOWNLOAD_BYTES

    return int(size) if size is not None else DOWNLOAD_BYTES.limit


def _too_big(url: str, what: str, size: int | None) -> str:
    from yolo_export.limits import DOWNLOAD_BYTES

    if size is not None:
        return f"{_short(url)} {what}, more than the manifest's {size:,}; the partial file was deleted"
    return (f"{_short(url)} {what} and the manifest states no size: over the download limit of "
            f"{DOWNLOAD_BYTES.limit:,} bytes (set {DOWNLOAD_BYTES.env} to raise it); the partial file was deleted")


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _user_agent() -> str:
    from yolo_export._version import __version__

    return f"yolo-export/{__version__} (+urllib)"


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive lock between processes fetching the same file (POSIX; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh = open(path, "a+")
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:  # the holder before us removed the file: lock the one that is there now
            if os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()
    try:
        yield
    finally:
        remove(path)  # no lock file outlives its holder (removed while still held, so no one else holds it)
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


# ----------------------------------------------------------------------------------------------- the zoo
def cached(name: str | Entry, manifest: dict[str, Entry] | None = None) -> dict | None:
    """The cache record of a zoo model (with ``path``) if a usable copy is cached, else None. Never downloads."""
    e = name if isinstance(name, Entry) else entry(name, manifest)
    ckpt, rec_path = cached_paths(e)
    rec = _read_json(rec_path)
    if not rec or not ckpt.is_file() or rec.get("name") != e.name:
        return None
    if rec.get("file_size") != ckpt.stat().st_size:
        LOGGER.debug(f"cached {ckpt} does not match its record (size); it will be fetched again")
        return None
    if e.sha256 and rec.get("source_sha256") != e.sha256.lower():
        LOGGER.debug(f"cached {ckpt} came from a file with another sha256 than the manifest pins")
        return None
    if e.source_format == "ultralytics" and rec.get("conversion_version", 1) < CONVERSION_VERSION:
        LOGGER.info(f"cached {ckpt} was converted by an earlier version (BatchNorm eps assumed, not read from the "
                    "file); it will be derived again from the original download")
        return None
    if e.pinned and rec.get("checksum_status") != "verified":
        rec = {**rec, "checksum_status": "verified"}  # the manifest now pins exactly what was fetched
    return {**rec, "path": str(ckpt)}


def fetch(name: str, *, force: bool = False, offline: bool | None = None, mirror=None,
          manifest: dict[str, Entry] | None = None, retries: int | None = None, backoff: float = 1.0,
          timeout: float | None = None, progress: bool = True) -> dict:
    """Make sure zoo model ``name`` is in the cache (download, verify, convert); return its record with ``path``.

    ``record["cached"]`` says whether it was there already; ``record["checksum_status"]`` is ``verified`` only
    when the sha256 of the downloaded bytes was compared with the one the manifest pins.
    """
    e = name if isinstance(name, Entry) else entry(name, manifest)
    if not force and (hit := cached(e)):
        return {**hit, "cached": True}
    ckpt, rec_path = cached_paths(e)
    if offline_mode(offline):
        raise DownloadError(f"{e.name} is not in the cache ({ckpt}) and offline mode is on "
                            "(YOLO_EXPORT_OFFLINE); fetch it once with network: yexport zoo get " + e.name)
    urls = urls_for(e, mirror)
    work = zoo_dir() / ".downloads"
    with _file_lock(work / f"{e.file}.lock"):
        if not force and (hit := cached(e)):  # another process finished it while we waited
            return {**hit, "cached": True}
        LOGGER.info(f"downloading {e.name} from {_short(urls[0])}" + (f" (+{len(urls) - 1} mirror(s))"
                                                                       if len(urls) > 1 else ""))
        raw = work / e.file
        got = download_file(urls, raw, sha256=e.sha256 if e.pinned else None, size=e.size, retries=retries,
                            backoff=backoff, timeout=timeout, progress=progress, desc=e.file)
        try:
            _install(e, raw, ckpt)
        except (CheckpointError, LimitError) as err:
            remove(ckpt)
            raise DownloadError(f"{e.file} from {_short(got['url'])} is not a usable checkpoint ({err}); "
                                "the file was deleted") from None
        finally:
            remove(raw)
        record = {
            "record_version": RECORD_VERSION,
            "name": e.name,
            "file": e.file,
            "source_url": got["url"],
            "source_format": e.source_format,
            "source_sha256": got["sha256"],
            "source_size": got["size"],
            "checksum_status": "verified" if got["verified"] else "unverified",
            "conversion_version": CONVERSION_VERSION if e.source_format == "ultralytics" else None,
            "file_size": ckpt.stat().st_size,
            "fetched": _dt.datetime.now().isoformat(timespec="seconds"),
        }
        atomic_write_bytes(rec_path, (json.dumps(record, indent=2) + "\n").encode())
    if got["verified"]:
        LOGGER.info(f"{e.name}: sha256 verified ({got['size']} bytes); cached at {ckpt}")
    else:
        LOGGER.warning(f"warning: {e.name} has no pinned sha256 in the manifest, so the download was NOT verified; "
                       f"recorded what was fetched (sha256 {got['sha256']}, {got['size']} bytes) in {rec_path}")
    return {**record, "path": str(ckpt), "cached": False}


def _install(e: Entry, raw: Path, ckpt: Path) -> None:
    """Put the verified download into the cache in our format (atomic); CheckpointError if it is not one."""
    from yolo_export.nn.checkpoint import FORMAT, load_checkpoint, save_ultralytics_as_ours

    if e.source_format == "ultralytics":
        save_ultralytics_as_ours(raw, ckpt)
        return
    ck = load_checkpoint(raw)  # refuses anything that is not a plain-dict checkpoint
    if ck.get("format") != FORMAT or ck.get("source") == "ultralytics":
        raise CheckpointError("the manifest says yolo-export format, the file is not")
    os.replace(raw, ckpt)


def resolve(name: str, **kwargs) -> str:
    """Path of the checkpoint for ``name``: a bare zoo name like ``yolov8s-cls.pt`` is fetched on first use.

    Called by ``YOLO(...)`` when a ``.pt`` path does not exist. A missing path with a folder in it is never
    fetched (the zoo does not write into arbitrary folders); the error names the zoo model to use instead.
    """
    p = Path(str(name))
    models = load_manifest()
    key = _key(p.name)
    names = {e.name.lower(): e for e in models.values()} | {_key(e.file): e for e in models.values()}
    if p.parent != Path(".") or key not in names:
        hint = ""
        if key in names:
            hint = f" ('{names[key].file}' without a folder is the zoo model {names[key].name})"
        elif (guess := nearest(key, list(models))) is not None:
            hint = f" (not a zoo model either; did you mean '{guess}.pt'?)"
        else:
            hint = f" (not a zoo model either: {', '.join(models)})"
        raise CheckpointNotFound(f"checkpoint not found: {name}{hint}")
    return fetch(names[key], **kwargs)["path"]


def list_models(manifest: dict[str, Entry] | None = None) -> list[dict]:
    """Every zoo model as a dict (manifest fields + ``cached`` and ``path``)."""
    models = manifest if manifest is not None else load_manifest()
    rows = []
    for e in models.values():
        hit = cached(e)
        rows.append({**e.to_dict(), "cached": bool(hit), "path": hit["path"] if hit else None,
                     "cached_checksum_status": hit.get("checksum_status") if hit else None})
    return rows
