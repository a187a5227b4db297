"""The model zoo against a real HTTP server on 127.0.0.1 (started here), serving a checkpoint built here in the
Ultralytics file layout: fresh download, cache hit, resume with Range, checksum/size mismatch, 404, server gone,
offline mode, mirrors, the manifest and its schema, and the `yexport zoo` / `yexport yolov8n-cls.pt` commands."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch
from conftest import has
from ultralytics_fake import make_ultralytics_checkpoint

from yolo_export import YOLO, zoo
from yolo_export.errors import CheckpointError, DownloadError, YoloExportError

ROOT = Path(__file__).resolve().parents[1]
NAME = "yolov8n-cls"


# ------------------------------------------------------------------------------------------ the server
class Server:
    """Files by URL path; per-path modes: ok, 404, 500, cut (the first ``cuts`` answers stop half-way), wrong
    (other bytes of the same length), norange (ignores Range). ``log`` holds (path, Range header) per request."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.mode: dict[str, str] = {}
        self.cuts = 0
        self.log: list[tuple[str, str | None]] = []
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                path = urlsplit(self.path).path
                rng = self.headers.get("Range")
                state.log.append((path, rng))
                mode = state.mode.get(path, "ok")
                data = state.files.get(path)
                if data is None or mode == "404":
                    self.send_error(404, "Not Found")
                    return
                if mode == "500":
                    self.send_error(503, "Service Unavailable")
                    return
                if mode == "wrong":
                    data = data[:1000] + bytes(b ^ 0x5A for b in data[1000:1100]) + data[1100:]
                start, status = 0, 200
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and mode != "norange":
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
                self.end_headers()
                if mode == "drip":  # a byte at a time, slowly enough that the transfer never ends (400 at most)
                    try:
                        for i in range(400):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(0.05)
                    except OSError:
                        pass
                    self.close_connection = True
                    return
                if mode == "cut" and state.cuts > 0:
                    state.cuts -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True  # the server hangs up half-way through the body
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture()
def dead_url():
    """The base URL of a server that was just shut down: nothing listens on that port."""
    s = Server()
    url = s.url
    s.close()
    return url


@pytest.fixture(scope="session")
def ul_bytes(tiny_yolo, tmp_path_factory) -> bytes:
    p = tmp_path_factory.mktemp("ul") / "yolov8n-cls.pt"
    make_ultralytics_checkpoint(p, tiny_yolo.model, imgsz=32)
    return p.read_bytes()


@pytest.fixture()
def zoo_env(tmp_path, monkeypatch):
    """A private cache and manifest; ``write(**entry_overrides)`` writes the manifest and returns the entry."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("YOLO_EXPORT_CACHE", str(cache))
    for var in ("YOLO_EXPORT_OFFLINE", "YOLO_EXPORT_MIRROR", "YOLO_EXPORT_RETRIES", "YOLO_EXPORT_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    man = tmp_path / "manifest.json"
    monkeypatch.setenv("YOLO_EXPORT_MANIFEST", str(man))
    packaged = json.loads(zoo.PACKAGED_MANIFEST.read_text())

    class Env:
        path, cache_dir = man, cache

        @staticmethod
        def write(**over):
            e = dict(packaged["models"][NAME], nc=10, imgsz=32, **over)
            if "urls" in over and "url_sources" not in over:
                e["url_sources"] = ["mirror"] * len(e["urls"])
            man.write_text(json.dumps({"schema_version": 2, "sources": packaged["sources"], "models": {NAME: e}}))
            return e

        @staticmethod
        def leftovers():
            """Every file in the cache except lock files."""
            return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and p.suffix != ".lock")

    return Env


def _serve(server, ul_bytes, path=f"/v8/{NAME}.pt", mode="ok"):
    server.files[path] = ul_bytes
    server.mode[path] = mode
    return server.url + path


def _pinned(ul_bytes) -> dict:
    return {"sha256": hashlib.sha256(ul_bytes).hexdigest(), "size": len(ul_bytes), "checksum_status": "verified"}


FAST = {"retries": 0, "backoff": 0.0, "timeout": 10, "progress": False}


# ---------------------------------------------------------------------------------------- the manifest
def test_manifest_root_and_packaged_copy_are_identical():
    assert (ROOT / "weights_manifest.json").read_bytes() == zoo.PACKAGED_MANIFEST.read_bytes()


def test_manifest_follows_its_schema_and_our_architecture():
    doc = json.loads(zoo.PACKAGED_MANIFEST.read_text())
    assert zoo.validate(doc, zoo.load_schema()) == []
    models = zoo.load_manifest(zoo.PACKAGED_MANIFEST)
    assert list(models) == [f"yolov8{s}-cls" for s in "nsmlx"]
    from yolo_export.nn.model import ClassificationModel

    for e in models.values():
        assert e.urls[0].startswith("https://") and e.urls[0].endswith("/" + e.file)
        assert e.nc == 1000 and e.imgsz == 224 and e.source_format == "ultralytics"
        assert 0 < e.metrics["top1"] < e.metrics["top5"] < 100 and "ImageNet" in e.metrics["dataset"]
        # nothing pinned that nobody checked: no sha256 means status 'unknown'
        assert (e.sha256 is None) == (e.checksum_status == "unknown")
        with torch.device("meta"):  # parameter count of our architecture at nc=1000, without allocating weights
            assert ClassificationModel(f"yolov8{e.scale}-cls.yaml", nc=e.nc).num_params() == e.params
        assert e.params_source == "counted"
        assert abs(e.params / 1e6 - e.published["params_m"]) <= 0.06  # the count agrees with the documented figure


# The project's source document: the v0.0.0 release, top-1/top-5 (ImageNet val, 224), params (M), CPU ONNX ms,
# A100 TensorRT ms.
DOCUMENTED = {"n": (66.6, 87.0, 2.7, 12.9, 0.31), "s": (72.3, 91.1, 6.4, 23.4, 0.35),
              "m": (76.4, 93.2, 17.0, 85.4, 0.62), "l": (78.0, 94.1, 37.5, 163.0, 0.87),
              "x": (78.4, 94.3, 57.4, 232.0, 1.01)}


def test_manifest_says_what_the_source_document_says_and_names_every_source():
    models = zoo.load_manifest(zoo.PACKAGED_MANIFEST)
    sources = zoo.manifest_sources(zoo.PACKAGED_MANIFEST)
    for e in models.values():
        t1, t5, pm, cpu, trt = DOCUMENTED[e.scale]
        assert e.urls[0] == f"https://github.com/ultralytics/assets/releases/download/v0.0.0/yolov8{e.scale}-cls.pt"
        assert e.release == "v0.0.0" and e.url_sources[0] == "source-document"
        assert all(s == "mirror" for s in e.url_sources[1:]) and len(e.url_sources) == len(e.urls)
        m = e.metrics
        assert (m["top1"], m["top5"], m["dataset"], m["split"], m["imgsz"]) == (t1, t5, "ImageNet-1k", "val", 224)
        assert m["source"] == "source-document" and m["kind"] == "published"
        assert e.published == {"params_m": pm, "cpu_onnx_ms": cpu, "a100_tensorrt_ms": trt,
                               "source": "source-document"}
        for sid in (*e.url_sources, e.params_source, m["source"], e.published["source"]):
            assert sid in sources and sources[sid]["title"]
        row = e.to_dict()
        assert row["published"] == e.published and row["url_sources"] == list(e.url_sources)


@pytest.mark.parametrize("change, expect", [
    (lambda d: d["models"][NAME]["metrics"].update(source="blog"), "unknown source 'blog'"),
    (lambda d: d["models"][NAME].update(params_source="guess"), "unknown source 'guess'"),
    (lambda d: d["models"][NAME]["url_sources"].pop(), "1 source(s) for 2 URL(s)"),
    (lambda d: d["models"][NAME]["metrics"].pop("source"), "missing required key 'source'"),
    (lambda d: d["models"][NAME].pop("published") and d["models"][NAME]["published"], None),
])
def test_a_figure_without_a_known_source_is_refused(change, expect, tmp_path):
    doc = json.loads(zoo.PACKAGED_MANIFEST.read_text())
    try:
        change(doc)
    except KeyError:
        pass
    p = tmp_path / "m.json"
    p.write_text(json.dumps(doc))
    if expect is None:  # 'published' is optional: a manifest without it loads
        assert zoo.load_manifest(p)[NAME].published is None
        return
    with pytest.raises(YoloExportError, match="invalid weights manifest") as ei:
        zoo.load_manifest(p)
    assert expect in str(ei.value) and "\n" not in str(ei.value)


def test_a_model_name_with_a_trailing_newline_is_refused():
    doc = json.loads(zoo.PACKAGED_MANIFEST.read_text())
    doc["models"]["evil\n"] = doc["models"].pop(NAME)
    assert any("does not match" in err for err in zoo.validate(doc, zoo.load_schema()))


@pytest.mark.skipif(not has("jsonschema"), reason="jsonschema not installed (cross-check of our own checker)")
def test_schema_cross_checked_with_jsonschema():
    import jsonschema

    schema = zoo.load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(zoo.PACKAGED_MANIFEST.read_text()), schema)


@pytest.mark.parametrize("change, expect", [
    (lambda e: e.update(sha256="xyz"), "does not match"),
    (lambda e: e.update(checksum_status="verified"), "expected string, got null"),
    (lambda e: e.update(sha256="a" * 64), "expected null, got string"),
    (lambda e: e.update(urls=[]), "at least 1"),
    (lambda e: e.update(urls=["ftp://x/y.pt"]), "does not match"),
    (lambda e: e.update(nc=True), "expected integer, got boolean"),
    (lambda e: e.update(colour="red"), "unexpected key 'colour'"),
    (lambda e: e.pop("imgsz"), "missing required key 'imgsz'"),
    (lambda e: e["metrics"].update(top1=140), "above the maximum"),
    # JSON Schema patterns are ECMA-262 ones: '$' ends the text, it does not also admit a trailing newline
    (lambda e: e.update(file="yolov8n-cls.pt\n"), "does not match"),
    (lambda e: e.update(urls=["https://example.org/yolov8n-cls.pt\n"]), "does not match"),
])
def test_schema_checker_rejects_bad_entries(change, expect, tmp_path, monkeypatch):
    doc = json.loads(zoo.PACKAGED_MANIFEST.read_text())
    change(doc["models"][NAME])
    errors = zoo.validate(doc, zoo.load_schema())
    assert errors and any(expect in err for err in errors), errors
    p = tmp_path / "m.json"
    p.write_text(json.dumps(doc))
    monkeypatch.setenv("YOLO_EXPORT_MANIFEST", str(p))
    with pytest.raises(YoloExportError, match="invalid weights manifest") as ei:
        zoo.load_manifest()
    assert "\n" not in str(ei.value)


# ------------------------------------------------------------------------------------------ downloads
def test_fresh_download_verified_then_cache_hit(server, ul_bytes, zoo_env, tiny_yolo, logs):
    zoo_env.write(urls=[_serve(server, ul_bytes)], **_pinned(ul_bytes))
    rec = zoo.fetch(NAME, **FAST)
    assert rec["cached"] is False and rec["checksum_status"] == "verified"
    assert rec["source_sha256"] == hashlib.sha256(ul_bytes).hexdigest() and rec["source_size"] == len(ul_bytes)
    assert len(server.log) == 1 and server.log[0][1] is None
    assert any("sha256 verified" in m for m in logs) and not any("NOT verified" in m for m in logs)
    # converted once to our plain format: loads with the safe loader, same outputs as the fp16 weights served
    ck = torch.load(rec["path"], map_location="cpu", weights_only=True)
    assert ck["format"] == "yolo-export/checkpoint" and ck["source"] == "ultralytics" and ck["imgsz"] == 32
    assert zoo_env.leftovers() == [f"zoo/{NAME}.json", f"zoo/{NAME}.pt"]  # no .part, no raw download kept
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = copy.deepcopy(tiny_yolo.model).half().float().eval()(x)
        got = YOLO(f"{NAME}.pt").model(x)
    assert torch.allclose(got, ref, atol=1e-6)
    # second time: from the cache, no request
    again = zoo.fetch(NAME, **FAST)
    assert again["cached"] is True and again["path"] == rec["path"] and len(server.log) == 1
    assert zoo.resolve(f"{NAME}.pt") == rec["path"] and len(server.log) == 1


def test_unknown_checksum_is_recorded_and_warned_never_claimed(server, ul_bytes, zoo_env, logs):
    zoo_env.write(urls=[_serve(server, ul_bytes)])  # the packaged style: sha256 null, status unknown
    rec = zoo.fetch(NAME, **FAST)
    digest = hashlib.sha256(ul_bytes).hexdigest()
    assert rec["checksum_status"] == "unverified" and rec["source_sha256"] == digest
    stored = json.loads((zoo_env.cache_dir / "zoo" / f"{NAME}.json").read_text())
    assert stored["checksum_status"] == "unverified" and stored["source_size"] == len(ul_bytes)
    warn = [m for m in logs if "NOT verified" in m]
    assert len(warn) == 1 and digest in warn[0] and str(len(ul_bytes)) in warn[0]
    # once the manifest pins exactly that sha256, the same cached copy counts as verified (no new download)
    zoo_env.write(urls=[server.url + "/elsewhere.pt"], **_pinned(ul_bytes))
    assert zoo.fetch(NAME, **FAST)["checksum_status"] == "verified" and len(server.log) == 1


def test_interrupted_download_resumes_with_range(server, ul_bytes, zoo_env):
    zoo_env.write(urls=[_serve(server, ul_bytes, mode="cut")], **_pinned(ul_bytes))
    server.cuts = 1
    rec = zoo.fetch(NAME, **{**FAST, "retries": 2})
    half = len(ul_bytes) // 2
    assert [r for _, r in server.log] == [None, f"bytes={half}-"]
    assert rec["checksum_status"] == "verified" and zoo_env.leftovers() == [f"zoo/{NAME}.json", f"zoo/{NAME}.pt"]


def test_partial_file_survives_a_failed_run_and_is_resumed_next_time(server, ul_bytes, zoo_env):
    zoo_env.write(urls=[_serve(server, ul_bytes, mode="cut")], **_pinned(ul_bytes))
    server.cuts = 1
    with pytest.raises(DownloadError, match="connection") as ei:
        zoo.fetch(NAME, **FAST)
    assert "\n" not in str(ei.value)
    part = zoo_env.cache_dir / "zoo" / ".downloads" / f"{NAME}.pt.part"
    assert part.stat().st_size == len(ul_bytes) // 2
    assert not (zoo_env.cache_dir / "zoo" / f"{NAME}.pt").exists()  # nothing half-done under the final name
    rec = zoo.fetch(NAME, **FAST)
    assert server.log[-1][1] == f"bytes={len(ul_bytes) // 2}-" and rec["checksum_status"] == "verified"
    assert not part.exists()


def test_server_ignoring_range_restarts_cleanly(server, ul_bytes, zoo_env):
    url = _serve(server, ul_bytes, mode="cut")
    zoo_env.write(urls=[url], **_pinned(ul_bytes))
    server.cuts = 1
    with pytest.raises(DownloadError):
        zoo.fetch(NAME, **FAST)
    server.mode[urlsplit(url).path] = "norange"
    assert zoo.fetch(NAME, **FAST)["checksum_status"] == "verified"  # 200 instead of 206: the part is rewritten


def test_a_server_that_drips_is_a_stalled_download(server, ul_bytes, zoo_env):
    """Each read arrives within the timeout, but a few bytes a second would take days: the download stops as stalled
    once a timeout's worth of time brings less than a chunk, and keeps nothing."""
    zoo_env.write(urls=[_serve(server, ul_bytes, mode="drip")], **_pinned(ul_bytes))
    with pytest.raises(DownloadError, match="stalled") as ei:
        zoo.fetch(NAME, **{**FAST, "timeout": 1})
    assert "\n" not in str(ei.value)


def test_checksum_mismatch_keeps_nothing(server, ul_bytes, zoo_env):
    zoo_env.write(urls=[_serve(server, ul_bytes, mode="wrong")], **_pinned(ul_bytes))
    with pytest.raises(DownloadError, match="checksum mismatch") as ei:
        zoo.fetch(NAME, **FAST)
    assert "\n" not in str(ei.value) and "deleted" in str(ei.value)
    assert zoo_env.leftovers() == []


def test_size_mismatch_is_refused_before_downloading(server, ul_bytes, zoo_env):
    zoo_env.write(urls=[_serve(server, ul_bytes)], **{**_pinned(ul_bytes), "size": len(ul_bytes) + 1})
    with pytest.raises(DownloadError, match="size mismatch"):
        zoo.fetch(NAME, **{**FAST, "retries": 3})
    assert len(server.log) == 1 and zoo_env.leftovers() == []  # a wrong size is not retried


def test_http_404_is_one_line_and_not_retried(server, ul_bytes, zoo_env):
    zoo_env.write(urls=[server.url + "/missing/yolov8n-cls.pt"])
    with pytest.raises(DownloadError) as ei:
        zoo.fetch(NAME, **{**FAST, "retries": 3})
    msg = str(ei.value)
    assert "HTTP 404" in msg and "/missing/yolov8n-cls.pt" in msg and "\n" not in msg
    assert len(server.log) == 1 and zoo_env.leftovers() == []


def test_http_503_is_retried(server, ul_bytes, zoo_env):
    url = _serve(server, ul_bytes, mode="500")
    zoo_env.write(urls=[url], **_pinned(ul_bytes))
    with pytest.raises(DownloadError, match="HTTP 503"):
        zoo.fetch(NAME, **{**FAST, "retries": 2})
    assert len(server.log) == 3 and zoo_env.leftovers() == []


def test_server_gone(dead_url, zoo_env):
    zoo_env.write(urls=[f"{dead_url}/{NAME}.pt"])
    with pytest.raises(DownloadError, match=r"cannot reach 127\.0\.0\.1:\d+") as ei:
        zoo.fetch(NAME, **{**FAST, "retries": 1})
    assert "\n" not in str(ei.value) and zoo_env.leftovers() == []


def test_not_a_checkpoint_is_deleted(server, zoo_env):
    junk = b"<html>a captive portal page, not weights</html>" * 50
    zoo_env.write(urls=[_serve(server, junk)])
    with pytest.raises(DownloadError, match="not a usable checkpoint"):
        zoo.fetch(NAME, **FAST)
    assert zoo_env.leftovers() == []


def test_offline_mode_uses_only_the_cache(server, ul_bytes, zoo_env, monkeypatch):
    zoo_env.write(urls=[_serve(server, ul_bytes)], **_pinned(ul_bytes))
    with pytest.raises(DownloadError, match="offline"):
        zoo.fetch(NAME, offline=True, **FAST)
    monkeypatch.setenv("YOLO_EXPORT_OFFLINE", "1")
    with pytest.raises(YoloExportError, match="offline"):  # through YOLO() too
        YOLO(f"{NAME}.pt")
    assert server.log == []
    path = zoo.fetch(NAME, offline=False, **FAST)["path"]
    assert zoo.resolve(f"{NAME}.pt") == path and len(server.log) == 1  # offline, served from the cache


def test_mirror_override_and_mirror_list(server, ul_bytes, zoo_env, dead_url, monkeypatch):
    _serve(server, ul_bytes, path=f"/my/mirror/{NAME}.pt")
    zoo_env.write(urls=[f"{dead_url}/{NAME}.pt"], **_pinned(ul_bytes))
    monkeypatch.setenv("YOLO_EXPORT_MIRROR", server.url + "/my/mirror/")
    rec = zoo.fetch(NAME, **FAST)
    assert rec["source_url"] == f"{server.url}/my/mirror/{NAME}.pt" and rec["checksum_status"] == "verified"
    # the manifest's own list of mirrors: the first is down, the second answers
    monkeypatch.delenv("YOLO_EXPORT_MIRROR")
    zoo_env.write(urls=[f"{dead_url}/{NAME}.pt", f"{server.url}/my/mirror/{NAME}.pt"], **_pinned(ul_bytes))
    rec = zoo.fetch(NAME, force=True, **FAST)
    assert rec["cached"] is False and rec["source_url"].startswith(server.url)


def test_stale_or_damaged_cache_is_fetched_again(server, ul_bytes, zoo_env):
    zoo_env.write(urls=[_serve(server, ul_bytes)])
    path = Path(zoo.fetch(NAME, **FAST)["path"])
    with open(path, "ab") as f:
        f.write(b"x")  # damaged after the fact
    assert zoo.cached(NAME) is None
    zoo.fetch(NAME, **FAST)
    assert len(server.log) == 2 and zoo.cached(NAME) is not None
    zoo_env.write(urls=[_serve(server, ul_bytes)], sha256="0" * 64, size=len(ul_bytes), checksum_status="verified")
    assert zoo.cached(NAME) is None  # the manifest now pins another file than the one cached


def test_conversion_by_an_earlier_version_is_derived_again(server, ul_bytes, zoo_env, logs):
    """A cached conversion made when BatchNorm eps was assumed (no ``conversion_version``) is not kept."""
    zoo_env.write(urls=[_serve(server, ul_bytes)])
    rec_path = zoo_env.cache_dir / "zoo" / f"{NAME}.json"
    path = Path(zoo.fetch(NAME, **FAST)["path"])
    rec = json.loads(rec_path.read_text())
    assert rec["conversion_version"] == zoo.CONVERSION_VERSION >= 2
    assert torch.load(path, weights_only=True)["yaml"]["module_attrs"]["bn_eps"] == 1e-5
    rec.pop("conversion_version")
    rec_path.write_text(json.dumps(rec))
    assert zoo.cached(NAME) is None and any("derived again" in m for m in logs)
    assert zoo.fetch(NAME, **FAST)["cached"] is False and len(server.log) == 2
    assert zoo.cached(NAME) is not None


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_bare_pickle_through_a_mirror_never_runs(server, zoo_env, tmp_path, monkeypatch):
    import pickle

    marker = tmp_path / "pwned"
    for i, body in enumerate([pickle.dumps({"model": _Payload(marker)}, protocol=2),
                              pickle.dumps(_Payload(marker), protocol=2) + b"PK\x05\x06" + b"\0" * 18]):
        _serve(server, body, path=f"/m{i}/{NAME}.pt")
        zoo_env.write(urls=[f"{server.url}/m{i}/{NAME}.pt"])
        monkeypatch.setenv("YOLO_EXPORT_MIRROR", f"{server.url}/m{i}/")
        with pytest.raises(DownloadError, match="bare pickle") as ei:
            zoo.fetch(NAME, **FAST)
        assert "\n" not in str(ei.value) and not marker.exists() and zoo_env.leftovers() == []


def test_names_that_do_not_resolve(zoo_env, server, ul_bytes):
    zoo_env.write(urls=[_serve(server, ul_bytes)])
    with pytest.raises(CheckpointError, match="checkpoint not found: nope.pt"):
        YOLO("nope.pt")
    with pytest.raises(CheckpointError, match="did you mean 'yolov8n-cls.pt'"):
        zoo.resolve("yolov8m-cls.pt")  # not in this (private) manifest
    with pytest.raises(CheckpointError, match="without a folder is the zoo model"):
        zoo.resolve(f"weights/{NAME}.pt")
    with pytest.raises(YoloExportError, match="unknown zoo model"):
        zoo.fetch("yolov8q-cls")
    assert server.log == []


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_zoo_list_get_path(cli, server, ul_bytes, zoo_env, logs):
    zoo_env.write(urls=[_serve(server, ul_bytes)])
    code, out, _ = cli("zoo", "list")
    assert code == 0 and re.search(rf"^{NAME} .* 66\.6% .* no$", out, re.M), out
    code, out, err = cli("zoo", "path", NAME)
    assert code == 1 and "not cached" in err
    code, out, err = cli("zoo", "get", NAME, "--json")
    rec = json.loads(out)
    assert code == 0 and rec["checksum_status"] == "unverified" and Path(rec["path"]).is_file()
    assert any("NOT verified" in m for m in logs)  # the warning goes to the log (stderr), not into the JSON
    code, out, _ = cli("zoo", "get", NAME)
    assert code == 0 and "(cached;" in out and "NOT verified" in out and len(server.log) == 1
    code, out, _ = cli("zoo", "path", NAME)
    assert code == 0 and out.strip() == rec["path"]
    code, out, _ = cli("zoo", "list", "--json")
    row = json.loads(out)["models"][0]
    assert row["name"] == NAME and row["cached"] is True and row["cached_checksum_status"] == "unverified"
    code, out, _ = cli("zoo", "list")
    assert re.search(rf"^{NAME} .* yes \(unverified\)$", out, re.M)


def test_cli_errors_are_one_line(cli, server, zoo_env):
    zoo_env.write(urls=[server.url + "/gone.pt"])
    code, out, err = cli("zoo", "get", NAME)
    assert code == 1 and err.strip().count("\n") == 0 and err.startswith("error: cannot download") and "404" in err
    code, out, err = cli("zoo", "get", "yolov8q-cls", "--json")
    assert code == 2 and "did you mean" in json.loads(out)["error"] and json.loads(out)["type"] == "ArgumentError"


@pytest.mark.skipif(not has("onnx", "onnxruntime"), reason="needs the 'onnx' extra")
def test_cli_export_by_zoo_name(cli, server, ul_bytes, zoo_env, tmp_path, monkeypatch):
    zoo_env.write(urls=[_serve(server, ul_bytes)], **_pinned(ul_bytes))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = cli(f"{NAME}.pt", "--format", "onnx", "--imgsz", "32")
    assert code == 0, err
    assert (work / f"{NAME}.onnx").is_file()  # exported where the user is, not into the cache
    assert "parity: max abs diff" in out and len(server.log) == 1
    assert not list((zoo_env.cache_dir / "zoo").glob("*.onnx"))
