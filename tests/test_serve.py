"""``yexport serve``: the real server (uvicorn, in its own process) over a real ONNX artefact, driven by a real HTTP
client. Answers match ``predict``; batched answers match unbatched ones; every bad request is a 4xx JSON error and
the server keeps serving; SIGTERM lets an in-flight request finish and exits 0; the page at / works in Chromium."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import needs

pytestmark = [needs("fastapi", "uvicorn", "prometheus_client", "multipart", extra="serve"),
              needs("onnxruntime", "onnx", extra="onnx")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=10):
    import httpx

    return httpx.get(url, timeout=timeout)


def post(url, timeout=30, **kw):
    import httpx

    return httpx.post(url, timeout=timeout, **kw)


class Server:
    def __init__(self, model, *args):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "yolo_export", "serve", str(model), "--port", str(self.port), *args]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()[1][-2000:]
            try:
                if get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError("the server did not become ready within 300 s")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmRSS")) / 1024

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.communicate()


@pytest.fixture(scope="module")
def onnx_model(tiny_pt, tmp_path_factory) -> Path:
    import shutil

    from yolo_export import YOLO

    d = tmp_path_factory.mktemp("serve")
    shutil.copy(tiny_pt, d / "tiny.pt")
    return Path(YOLO(d / "tiny.pt").export("onnx", imgsz=32))


@pytest.fixture(scope="module")
def server(onnx_model):
    s = Server(onnx_model, "--max-upload-mb", "2", "--max-images", "4", "--max-pixels", "1000000",
               "--max-batch", "8", "--batch-wait-ms", "20", "--threads", "2")
    yield s
    s.stop()


def jpeg(w=64, h=48, seed=0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_predict_matches_cli_json(server, onnx_model, tmp_path):
    from yolo_export import YOLO

    paths = []
    for i, (w, h) in enumerate([(64, 48), (40, 80), (33, 57)]):
        p = tmp_path / f"im{i}.jpg"
        p.write_bytes(jpeg(w, h, seed=i))
        paths.append(p)
    want = [r.to_dict() for r in YOLO(onnx_model, threads=2).predict([str(p) for p in paths])]
    raw = post(server.url + "/predict", content=paths[0].read_bytes(), headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200, raw.text
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    multi = post(server.url + "/predict", files=files)
    assert multi.status_code == 200, multi.text
    got = [raw.json()[0], *multi.json()]
    for g, w in zip(got, [want[0], *want]):
        assert set(g) == set(w) and set(g["speed"]) == set(w["speed"])
        assert (g["top1"], g["name"], g["top5"]) == (w["top1"], w["name"], w["top5"])
        assert (g["threads"], g["preprocess"]) == (w["threads"], w["preprocess"]) == (2, "exact")
    assert [g["path"] for g in multi.json()] == [p.name for p in paths]


def test_health_ready_metadata_metrics(server):
    assert get(server.url + "/health").json() == {"status": "ok"}
    assert get(server.url + "/ready").status_code == 200
    md = get(server.url + "/metadata").json()
    assert md["format"] == "onnx" and md["nc"] == 10 and md["imgsz"] == [32, 32]
    assert md["threads"] == 2  # the server's --threads, as ONNX Runtime reports it
    assert md["verification"]["status"] == "passed"
    post(server.url + "/predict", content=jpeg())
    text = get(server.url + "/metrics").text
    for name in ("yexport_requests_total", "yexport_errors_total", "yexport_request_latency_seconds_bucket",
                 "yexport_batch_size_bucket", "yexport_images_total", 'yexport_stage_seconds_count{stage="runtime"}',
                 'yexport_stage_seconds_sum{stage="runtime_wait"}'):
        assert name in text
    assert 'yexport_requests_total{path="/predict",status="200"}' in text


def _bomb_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buf, "PNG")  # 48 Mpx (over the default limit) in ~50 kB
    return buf.getvalue()


def bad_requests(limit_mb: float = 2, max_images: int = 4):
    """(what, kwargs for POST /predict, expected status, expected error ``type``)."""
    big = int(limit_mb * 2**20) + 1
    img = jpeg()
    return [
        ("empty body", {"content": b""}, 400, "ArgumentError"),
        ("not an image", {"content": b"this is not an image" * 10}, 415, "ImageError"),
        ("truncated jpeg", {"content": img[: len(img) // 3]}, 415, "ImageError"),
        ("decompression bomb", {"content": _bomb_png()}, 413, "LimitError"),
        ("100 MB upload", {"content": b"\0" * (100 * 2**20)}, 413, "LimitError"),
        ("body just over the limit", {"content": b"\xff" * big}, 413, "LimitError"),
        ("too many images", {"files": [("f", (f"{i}.jpg", img, "image/jpeg")) for i in range(max_images + 1)]}, 413,
         "LimitError"),
        ("multipart with no file", {"files": {"a": (None, b"b")}}, 400, "ArgumentError"),
        ("multipart: a URL", {"files": {"url": (None, b"http://127.0.0.1:1/x.jpg")}}, 400, "ArgumentError"),
        ("form-encoded text", {"data": {"a": "b"}}, 415, "ImageError"),
        ("raw URL", {"content": b"https://example.com/cat.jpg"}, 400, "ArgumentError"),
        ("multipart: one bad image", {"files": [("f", ("a.jpg", img, "image/jpeg")), ("f", ("b", b"xx", "x/y"))]},
         415, "ImageError"),
    ]


def is_error_doc(body, kind: str | None = None) -> bool:
    """The CLI's error document: exactly ``{"error", "type"}``, ``type`` a documented class."""
    from yolo_export.errors import DOCUMENTED

    return (isinstance(body, dict) and set(body) == {"error", "type"} and body["type"] in DOCUMENTED
            and (kind is None or body["type"] == kind) and "Traceback" not in body["error"])


def test_bad_requests_are_4xx_json_and_server_keeps_serving(server):
    for what, kw, status, kind in bad_requests():
        r = post(server.url + "/predict", **kw)
        assert r.status_code == status, (what, r.status_code, r.text[:300])
        assert is_error_doc(r.json(), kind), (what, r.text[:300])
        ok = post(server.url + "/predict", content=jpeg())
        assert ok.status_code == 200, (what, ok.text)
    for path, status in (("/nope", 404), ("/predict", 405)):
        r = get(server.url + path)
        assert r.status_code == status and is_error_doc(r.json(), "ArgumentError"), r.text
    assert server.proc.poll() is None


def wait_in_flight(server: Server, n: int, within: float = 60) -> None:
    """Until the server reports ``n`` POST requests in its app (past the concurrency cap, their bodies read)."""
    deadline = time.time() + within
    while time.time() < deadline:
        if f"yexport_in_flight {float(n)}" in get(server.url + "/metrics").text:
            return
        time.sleep(0.05)
    raise AssertionError(f"the server did not report {n} requests in flight within {within:.0f} s")


def test_over_the_concurrency_cap_is_503_json_and_serving_goes_on(onnx_model):
    """--max-concurrency 2: two requests wait in the batcher (5 s: room for the third post on a busy machine), a third
    is refused at once with 503 and the error document, before its body is read; health answers meanwhile; afterwards
    every request is served."""
    s = Server(onnx_model, "--max-concurrency", "2", "--max-batch", "64", "--batch-wait-ms", "5000")
    try:
        out: dict = {}
        threads = [threading.Thread(target=lambda i=i: out.update({i: post(s.url + "/predict", content=jpeg())}))
                   for i in range(2)]
        for t in threads:
            t.start()
        wait_in_flight(s, 2)  # both hold a slot (a fixed sleep raced the two posts on a busy machine)
        busy = post(s.url + "/predict", content=jpeg(seed=5))
        assert busy.status_code == 503 and is_error_doc(busy.json(), "NotAvailable"), busy.text
        assert "--max-concurrency 2" in busy.json()["error"] and busy.headers.get("retry-after") == "1"
        assert get(s.url + "/health").status_code == 200  # GETs are not capped
        for t in threads:
            t.join(30)
        assert [out[i].status_code for i in range(2)] == [200, 200]
        assert post(s.url + "/predict", content=jpeg(seed=5)).status_code == 200
        assert "yexport_refused_busy_total 1.0" in get(s.url + "/metrics").text
    finally:
        s.stop()


def test_replicas_metrics_and_ready_are_whole(onnx_model):
    """--replicas 2: /ready waits for both workers; /metrics sums both workers' counts, whichever one answers."""
    s = Server(onnx_model, "--replicas", "2")
    try:
        ready = get(s.url + "/ready").json()
        assert ready["workers"] == 2 and ready["replicas"] == 2, ready
        pids, n = set(), 0
        deadline = time.time() + 180
        while (len(pids) < 2 or n < 12) and time.time() < deadline:  # new connections: the kernel spreads them
            r = post(s.url + "/predict", content=jpeg(seed=n))
            assert r.status_code == 200, r.text
            n += 1
            pids.add(get(s.url + "/metadata").json()["serve"]["pid"])
        assert len(pids) == 2, "one worker answered every request"
        for _ in range(6):
            text = get(s.url + "/metrics").text
            assert f"yexport_images_total {float(n)}" in text, text[-1500:]
            assert f'yexport_requests_total{{path="/predict",status="200"}} {float(n)}' in text
    finally:
        s.stop()


def test_serve_json_start_document_and_errors(onnx_model):
    """serve --json: one start document on stdout; a server that cannot start prints the CLI's error document."""
    s = Server(onnx_model, "--json")
    try:
        doc = json.loads(s.proc.stdout.readline())
        assert doc["url"] == s.url and doc["replicas"] == 1 and doc["pid"] == s.proc.pid
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            p = subprocess.run([sys.executable, "-m", "yolo_export", "serve", str(onnx_model), "--port", str(port),
                                "--json"], capture_output=True, text=True, timeout=120)
        err = json.loads(p.stdout)
        assert p.returncode == 1 and is_error_doc(err, "NotAvailable") and f":{port}" in err["error"], p.stdout
        p = subprocess.run([sys.executable, "-m", "yolo_export", "serve", str(onnx_model), "--max-batch", "0",
                            "--json"], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and is_error_doc(json.loads(p.stdout), "ArgumentError"), p.stdout
    finally:
        s.stop()


def test_concurrent_requests_are_batched_and_agree(server, onnx_model):
    """Twelve requests at once on a server whose batch is run only when twelve images are in (--max-batch 12,
    --batch-wait-ms 60000): one runtime call answers all twelve, as the shared server answers them one by one. (A
    20 ms window made "some call took two images" depend on how closely twelve threads' posts arrived.)"""
    from concurrent.futures import ThreadPoolExecutor

    imgs = [jpeg(64, 48, seed=s) for s in range(12)]
    single = [post(server.url + "/predict", content=b).json()[0] for b in imgs]
    s = Server(onnx_model, "--max-batch", "12", "--batch-wait-ms", "60000", "--threads", "2")
    try:
        before = _batch_stats(s)
        with ThreadPoolExecutor(12) as pool:
            together = list(pool.map(lambda b: post(s.url + "/predict", content=b, timeout=120).json()[0], imgs))
        after = _batch_stats(s)
    finally:
        s.stop()
    assert [(a["top1"], a["name"]) for a in single] == [(b["top1"], b["name"]) for b in together]
    for a, b in zip(single, together):
        assert max(abs(x["confidence"] - y["confidence"]) for x, y in zip(a["top5"], b["top5"])) <= 1e-5
    assert (after[0] - before[0], after[1] - before[1]) == (1, 12)  # one runtime call, twelve images


def _batch_stats(server):
    text = get(server.url + "/metrics").text
    vals = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("yexport_batch")}
    return vals["yexport_batch_size_count"], vals["yexport_batch_size_sum"]


@pytest.mark.parametrize("dynamic", [False, True])
def test_batcher_probabilities_match_unbatched(tiny_pt, tmp_path, dynamic):
    """In process: the batcher's probabilities equal batch-1 runs within 1e-6, for a fixed-batch artefact (padded)
    and a dynamic one."""
    import shutil

    from yolo_export import YOLO
    from yolo_export.serving import Batcher, ModelService, ServeConfig

    shutil.copy(tiny_pt, tmp_path / "tiny.pt")
    kw = {"dynamic": True, "batch": 8} if dynamic else {"batch": 4}
    art = YOLO(tmp_path / "tiny.pt").export("onnx", imgsz=32, **kw)
    svc = ModelService(ServeConfig(model=art))
    svc.load()
    assert svc.ready, svc.error
    arrays = [svc.prepare(jpeg(64, 48, seed=s), f"{s}.jpg")[0] for s in range(11)]
    single = np.concatenate([svc.run([a]) for a in arrays])

    async def together():
        b = Batcher(svc.run, 8, 50.0)
        try:
            return await asyncio.gather(*[b.submit([a]) for a in arrays])
        finally:
            b.close()

    batched = np.stack([r[0][0] for r in asyncio.run(together())])
    assert np.abs(batched - single).max() <= 1e-6
    assert (batched.argmax(1) == single.argmax(1)).all()


def test_sigterm_finishes_in_flight_request_then_exits_0(onnx_model):
    s = Server(onnx_model, "--batch-wait-ms", "3000", "--max-batch", "64")
    try:
        out = {}
        t = threading.Thread(target=lambda: out.update(r=post(s.url + "/predict", content=jpeg())))
        t.start()
        wait_in_flight(s, 1)  # the request now waits in the batcher (a fixed sleep could signal before it arrived)
        s.proc.send_signal(signal.SIGTERM)
        t.join(30)
        assert out["r"].status_code == 200, out["r"].text
        assert s.proc.wait(30) == 0
    finally:
        s.stop()


def test_missing_model_is_one_line_and_not_ready(tmp_path):
    p = tmp_path / "nothing.onnx"
    p.write_bytes(b"not an onnx file")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "yolo_export", "serve", str(p), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline, r = time.time() + 300, None
        while time.time() < deadline:
            try:
                r = get(f"http://127.0.0.1:{port}/ready", timeout=2)
                if r.status_code == 503 and "failed" in r.json()["error"]:
                    break
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.3)
        assert r is not None and r.status_code == 503 and "failed to load" in r.json()["error"]
        assert is_error_doc(r.json()), r.json()
        bad = post(f"http://127.0.0.1:{port}/predict", content=jpeg())
        assert bad.status_code == 503 and is_error_doc(bad.json()) and bad.json() == r.json()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def test_help_imports_no_serving_or_ray():
    code = ("import sys; from click.testing import CliRunner; from yolo_export.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
            "r = CliRunner().invoke(main, ['serve', '--help']); assert r.exit_code == 0, r.output; "
            "bad = [m for m in ('fastapi', 'uvicorn', 'starlette', 'ray', 'prometheus_client', 'torch') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ the page, in headless Chromium
def test_page_classifies_a_dropped_image_in_chromium(server, onnx_model, tmp_path):
    from test_tfjs_browser import CHROMIUM_FLAGS, chromium

    if chromium() is None:
        if os.environ.get("CI"):
            raise AssertionError("CI must have Chromium (.ci/install_browser.sh)")
        pytest.skip("needs Chromium (Debian: apt-get install chromium)")
    from PIL import Image

    from yolo_export import YOLO

    arr = np.zeros((48, 64, 3), np.uint8)
    arr[:24, :32], arr[:24, 32:], arr[24:, :32], arr[24:, 32:] = (0xD0, 0x20, 0x10), (0x10, 0xA0, 0x40), \
        (0x20, 0x40, 0xE0), (0xF0, 0xE0, 0x20)
    Image.fromarray(arr).save(tmp_path / "same.png")
    want = YOLO(onnx_model).predict(str(tmp_path / "same.png"))[0]
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
           "--dump-dom", server.url + "/#selftest"]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    assert "done: " in dom, dom[-2000:]
    rows = dom.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    assert len(rows) == 5
    first = [c.split("</td>")[0] for c in rows[0].split("<td>")[1:]]
    assert first[1:3] == [str(want.probs.top1), want.names[want.probs.top1]]
    assert json.dumps(want.names[want.probs.top1])[1:-1] in dom


def _read_until_closed(conn) -> bytes:
    """The whole answer on a connection the server closes: headers and body may arrive in separate reads."""
    chunks = []
    while chunk := conn.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_slow_body_gets_408_and_frees_its_slot(onnx_model):
    """Slowloris: clients that send headers and part of a body must not hold every --max-concurrency slot."""
    import socket

    s = Server(onnx_model, "--max-concurrency", "2", "--body-timeout", "1")
    try:
        held = []
        for _ in range(2):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            c.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
            held.append(c)
        first = _read_until_closed(held[0])
        assert first.startswith(b"HTTP/1.1 408") and b"not received within 1 s" in first, first
        c = socket.create_connection(("127.0.0.1", s.port), timeout=60)
        c.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # and the rest of the head never comes
        status, _, doc = _answer(_read_until_closed(c))
        c.close()
        assert status == 408 and is_error_doc(doc, "LimitError") and "head not received" in doc["error"], doc
        assert post(s.url + "/predict", content=jpeg()).status_code == 200
        for c in held:
            c.close()
    finally:
        s.stop()
    code = subprocess.run([sys.executable, "-m", "yolo_export", "serve", str(onnx_model), "--port", "70000"],
                          capture_output=True, text=True, timeout=60)
    assert code.returncode == 2 and "--port must be between 0 and 65535" in code.stderr


# ------------------------------------------------------------------------------ the HTTP layer under attack
def _raw(port: int, head: bytes, body=b"", rcvbuf: int | None = None) -> socket.socket:
    """A connection that sent ``head`` and all of ``body`` (blocking until the server took it) and reads nothing."""
    c = socket.socket()
    if rcvbuf:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    c.settimeout(60)
    c.connect(("127.0.0.1", port))
    c.sendall(head + body)
    return c


def _answer(raw: bytes) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of the one answer in ``raw``."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body)


def _chunked(data: bytes, size: int = 65536) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size]) for i in range(0, len(data), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def test_oversized_uploads_are_413_unread_and_readable(onnx_model):
    """A Content-Length over --max-upload-mb is answered 413 from the header, before any body byte (even with
    Expect: 100-continue, which gets no 100), with connection: close, and the slot goes back at once: with
    --max-concurrency 1, two such connections that never send their body do not stop the next request. A client
    that sends its whole body before reading (chunked, or declared) reads the 413, not a reset connection."""
    s = Server(onnx_model, "--max-concurrency", "1", "--max-upload-mb", "1")
    try:
        held = []
        for expect in (b"Expect: 100-continue\r\n", b""):
            c = _raw(s.port, b"POST /predict HTTP/1.1\r\nHost: x\r\n%sContent-Length: 104857600\r\n\r\n" % expect)
            status, headers, doc = _answer(_read_until_closed(c))
            assert (status, headers["connection"]) == (413, "close") and is_error_doc(doc, "LimitError"), doc
            assert "104857600 bytes is over the limit of 1 MB" in doc["error"]
            held.append(c)  # still open, body never sent
        assert post(s.url + "/predict", content=jpeg()).status_code == 200
        big = b"\xff" * (24 * 2**20)  # far over the limit and the socket buffers: a plain close would reset it
        for head, body in ((b"Transfer-Encoding: chunked\r\n", _chunked(big)),
                           (b"Content-Length: %d\r\n" % len(big), big)):
            c = _raw(s.port, b"POST /predict HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n", body)
            status, headers, doc = _answer(_read_until_closed(c))
            c.close()
            assert (status, headers["connection"]) == (413, "close") and is_error_doc(doc, "LimitError"), doc
        for c in held:
            c.close()
        assert post(s.url + "/predict", content=jpeg()).status_code == 200
        assert s.proc.poll() is None
    finally:
        s.stop()


def test_header_and_trailer_floods_are_431_and_memory_stays_bounded(server):
    """The parser keeps every header until the head ends: 16 MB of headers (or of a chunked body's trailers) get
    431 and the error document after 64 KB, and the server's memory does not grow by what was sent."""
    line = b"X-Flood: " + b"a" * 1013 + b"\r\n"
    rss0 = server.rss_mb()
    for head in (b"GET /health HTTP/1.1\r\nHost: x\r\n",
                 b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"):
        c = _raw(server.port, head, line * 16384)
        status, headers, doc = _answer(_read_until_closed(c))
        c.close()
        assert (status, headers["connection"]) == (431, "close") and is_error_doc(doc, "LimitError"), doc
    assert server.rss_mb() - rss0 < 16  # 32 MB were sent
    c = _raw(server.port, b"NOT HTTP AT ALL\r\n\r\n")
    status, _, doc = _answer(_read_until_closed(c))
    c.close()
    assert status == 400 and is_error_doc(doc, "ArgumentError"), doc
    assert post(server.url + "/predict", content=jpeg()).status_code == 200


def test_pipelined_requests_are_answered_in_order(server):
    """In order, on one connection: bodies over the 64 KB head budget (a 640x480 JPEG) and small ones."""
    imgs = [jpeg(640, 480, seed=i) if i % 10 == 0 else jpeg(64, 48, seed=i) for i in range(40)]
    assert len(imgs[0]) > 128 * 1024
    reqs = [b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b) for b in imgs]
    c = _raw(server.port, b"".join(reqs) + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = _read_until_closed(c)
    c.close()
    answers = [json.loads(part.split(b"\r\n\r\n", 1)[1]) for part in raw.split(b"HTTP/1.1 ")[1:]]
    assert answers[-1] == {"status": "ok"} and len(answers) == 41
    single = [post(server.url + "/predict", content=b).json()[0] for b in imgs[:4]]
    assert [(a[0]["top1"], a[0]["top5"]) for a in answers[:4]] == [(a["top1"], a["top5"]) for a in single]
    c = _raw(server.port, b"")
    for b in imgs[:3]:  # keep-alive, one at a time: each request's head is counted from its own start
        c.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b))
        raw = b""
        while b"}]" not in raw:
            raw += c.recv(65536)
        assert raw.startswith(b"HTTP/1.1 200"), raw[:300]
    c.close()


def test_a_client_that_never_reads_its_answers_loses_the_connection_not_the_slot(onnx_model):
    """Pipelined requests whose answers are never read: the server parses a few ahead (not all it could read:
    each costs memory), and once the buffers are full the answer cannot be written; after --body-timeout the server
    drops the connection, and the request's --max-concurrency slot goes back. Memory stays bounded meanwhile."""
    s = Server(onnx_model, "--max-concurrency", "1", "--body-timeout", "1")
    try:
        rss0 = s.rss_mb()
        req = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" * 1000  # each answered 400
        out = {}

        def pipeline():
            c = _raw(s.port, b"", rcvbuf=4096)
            try:
                for _ in range(2000):  # until the server drops the connection, or stops reading for 60 s
                    c.sendall(req)
                out["all sent"] = True  # the server read (and answered into its memory) 2 million requests
            except TimeoutError as e:
                out["blocked"] = e
            except OSError as e:
                out["dropped"] = e
            finally:
                c.close()

        t = threading.Thread(target=pipeline, daemon=True)
        t.start()
        t.join(300)
        assert "dropped" in out, out
        assert s.rss_mb() - rss0 < 64, (rss0, s.rss_mb())
        deadline = time.time() + 60
        while (r := post(s.url + "/predict", content=jpeg())).status_code == 503 and time.time() < deadline:
            time.sleep(0.2)  # the dropped connection's last request may still be finishing
        assert r.status_code == 200, r.text
    finally:
        s.stop()
