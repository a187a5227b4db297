"""The corpus: issue 12's twelve rows and its "already safe" list, each a Case (files built in a fresh sandbox)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import Case, Sandbox
from . import files as F



# ------------------------------------------------------------------------------------------ a local mirror
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"         # no Content-Length needed: the body ends when the connection closes
    routes: dict = {}

    def do_GET(self):  # noqa: N802
        route = self.routes.get(self.path.split("?")[0].rsplit("/", 1)[-1])
        if route is None:
            self.send_error(404)
            return
        route(self)

    def log_message(self, *a):
        pass


def _endless(h):
    h.send_response(200)
    h.send_header("Content-Type", "application/octet-stream")
    h.end_headers()
    chunk = b"\0" * (1 << 20)
    try:
        for _ in range(4096):                     # 4 GB at most, without a Content-Length
            h.wfile.write(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass


def _redirect_to(url):
    def route(h):
        h.send_response(302)
        h.send_header("Location", url)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return route


_SERVER = {}


def server(routes: dict) -> str:
    """http://127.0.0.1:PORT serving ``routes`` (file name -> handler); one server per test process."""
    _Handler.routes.update(routes)
    if "url" not in _SERVER:
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        _SERVER["url"] = f"http://127.0.0.1:{srv.server_address[1]}"
    return _SERVER["url"]


# ------------------------------------------------------------------------------------------ builders
def _img(sb: Sandbox) -> str:
    F.jpeg(sb.case / "img.jpg")
    return "img.jpg"


def row1_pickle_eocd(sb):
    (sb.case / "evil.pt").write_bytes(F.reduce_pickle(sb.payload) + F.EOCD)
    return ["info", "evil.pt"]


def row1_pickle_predict(sb):
    (sb.case / "evil.pt").write_bytes(F.reduce_pickle(sb.payload) + F.EOCD)
    return ["predict", "-m", "evil.pt", "-s", _img(sb)]


def row1_legacy_tar(sb):
    F.legacy_tar(sb.case / "evil.pt", sb.payload)
    return ["info", "evil.pt"]


def row1_zoo_bare_pickle(sb):
    mirror = sb.root / "mirror"
    mirror.mkdir()
    (mirror / "yolov8n-cls.pt").write_bytes(F.reduce_pickle(sb.payload))
    sb.env_extra = {"YOLO_EXPORT_MIRROR": mirror.as_uri()}
    return ["zoo", "get", "yolov8n-cls"]


def row2_torchscript_pt(sb):
    F.torchscript_overwriter(sb.case / "evil.pt", sb.victim)
    return ["info", "evil.pt"]


def row2_torchscript_info(sb):
    meta = {"names": repr(F.NAMES), "imgsz": "[32, 32]", "batch": "1", "task": "classify"}
    F.torchscript_overwriter(sb.case / "x.torchscript", sb.victim, extra=meta)
    return ["info", "x.torchscript"]


def row3_onnx_preprocess(sb):
    props = F.good_props()
    props["preprocess"] = json.dumps({"resize": 100000, "crop": 100000, "mean": [0, 0, 0], "std": [1, 1, 1]})
    F.tiny_onnx(sb.case / "evil.onnx", props)
    return ["predict", "-m", "evil.onnx", "-s", _img(sb)]


def row4_tflite_bomb(sb):
    F.tflite_with_bomb(sb.case / "evil.tflite")
    return ["info", "evil.tflite"]


def row5_billion_laughs(sb):
    F.ncnn_dir(sb.case / "evil_ncnn_model", F.billion_laughs())
    return ["info", "evil_ncnn_model"]


def row6_shared_nest(sb):
    F.real_checkpoint(sb.root / "good.pt")
    F.tweak_checkpoint(sb.root / "good.pt", sb.case / "evil.pt",
                       lambda ck: ck.update(metrics={"top1": F.shared_nest()}, train_args={"x": F.shared_nest()}))
    return ["info", "evil.pt"]


def row7_nc(sb):
    F.real_checkpoint(sb.root / "good.pt")
    F.tweak_checkpoint(sb.root / "good.pt", sb.case / "evil.pt", lambda ck: ck["yaml"].update(nc=300000))
    return ["info", "evil.pt"]


def row7_width(sb):
    def wide(ck):
        ck["yaml"].setdefault("scales", {})
        scales = ck["yaml"]["scales"] or {"n": [0.33, 0.25, 1024]}
        ck["yaml"]["scales"] = {k: [v[0], 64.0, v[2]] for k, v in scales.items()}
        ck["yaml"]["width_multiple"] = 64.0
    F.real_checkpoint(sb.root / "good.pt")
    F.tweak_checkpoint(sb.root / "good.pt", sb.case / "evil.pt", wide)
    return ["info", "evil.pt"]


def row8_deflated_storage(sb):
    F.real_checkpoint(sb.root / "good.pt")
    F.deflated_storage(sb.root / "good.pt", sb.case / "evil.pt")
    return ["info", "evil.pt"]


def row9_symlink_loop(sb):
    F.tiny_onnx(sb.case / "m.onnx")
    d = sb.case / "dir" / "sub"
    d.mkdir(parents=True)
    F.jpeg(d / "a.png")
    (d / "up").symlink_to("..")
    (d / "top").symlink_to("../../..")
    return ["predict", "-m", "m.onnx", "-s", "dir/**/*.png"]


def row10_tfjs_manifest(sb):
    import pytest

    from yolo_export.backends.tfjs import node_prefix, node_status

    ok, why = node_status()
    if not ok:
        pytest.skip(f"the TF.js runtime is not set up here ({why}); the check sits after it")
    sb.env_extra = {"YOLO_EXPORT_NODE_PATH": str(node_prefix())}
    F.tfjs_dir(sb.case / "evil_web_model", ["../../outside/secret.txt"])
    return ["predict", "-m", "evil_web_model", "-s", _img(sb)]


def row11_bomb_in_folder(sb):
    F.tiny_onnx(sb.case / "m.onnx")
    d = sb.case / "imgs"
    d.mkdir()
    F.jpeg(d / "good.jpg")
    F.png_bomb(d / "bomb.png")
    F.jpeg_bomb(d / "huge.jpg")
    return ["predict", "-m", "m.onnx", "-s", "imgs"]


def row11_bomb_alone(sb):
    F.tiny_onnx(sb.case / "m.onnx")
    F.png_bomb(sb.case / "bomb.png")
    return ["predict", "-m", "m.onnx", "-s", "bomb.png"]


def row12_endless_download(sb):
    url = server({"yolov8n-cls.pt": _endless})
    sb.env_extra = {"YOLO_EXPORT_MIRROR": url, "YOLO_EXPORT_MAX_DOWNLOAD_BYTES": str(32 << 20),
                    "YOLO_EXPORT_RETRIES": "0"}
    return ["zoo", "get", "yolov8n-cls"]


def _zip_attack(kind):
    def build(sb):
        F.zip_pickle(sb.case / "evil.pt", F.zip_attacks(sb.payload)[kind])
        return ["info", "evil.pt"]
    build.__name__ = f"safe_zip_{kind}"
    return build


def safe_trt_length(sb):
    F.trt_engine(sb.case / "evil.engine", b"{}", declared=0xFFFFFFFF)
    return ["info", "evil.engine"]


def safe_trt_deep(sb):
    F.trt_engine(sb.case / "evil.engine", b"[" * 200000)
    return ["info", "evil.engine"]


def safe_trt_nested_json(sb):
    F.trt_engine(sb.case / "evil.engine", b'{"names": ' + b"[" * 200000)
    return ["info", "evil.engine"]


def safe_trt_preprocess(sb):
    meta = {"names": F.NAMES, "imgsz": [32, 32], "preprocess": {"resize": 100000, "crop": 100000}}
    F.trt_engine(sb.case / "evil.engine", json.dumps(meta).encode())
    return ["info", "evil.engine"]


def safe_pte_length(sb):
    F.pte(sb.case / "evil.pte", b"{}", declared=1 << 62)
    return ["info", "evil.pte"]


def safe_pte_deep(sb):
    F.pte(sb.case / "evil.pte", b'{"names": ' + b"[" * 100000 + b"]" * 100000 + b"}")
    return ["info", "evil.pte"]


def safe_pte_preprocess(sb):
    meta = {"names": repr(F.NAMES), "preprocess": json.dumps({"resize": 100000, "crop": 224})}
    F.pte(sb.case / "evil.pte", json.dumps(meta).encode())
    return ["info", "evil.pte"]


def safe_yaml_python_tag(sb):
    F.ncnn_dir(sb.case / "evil_ncnn_model", f"names: !!python/object/apply:os.system [{sb.payload!r}]\n")
    return ["info", "evil_ncnn_model"]


def safe_zoo_redirect_file(sb):
    url = server({"yolov8s-cls.pt": _redirect_to(sb.secret.as_uri())})
    sb.env_extra = {"YOLO_EXPORT_MIRROR": url, "YOLO_EXPORT_RETRIES": "0"}
    return ["zoo", "get", "yolov8s-cls"]


def safe_zoo_dotdot(sb):
    manifest = json.loads((F.Path(__file__).parents[2] / "yolo_export" / "weights_manifest.json").read_text())
    e = manifest["models"]["yolov8n-cls"]
    e["file"] = "../../outside/victim.txt"
    e["urls"] = [sb.secret.as_uri()]
    (sb.root / "manifest.json").write_text(json.dumps(manifest))
    sb.env_extra = {"YOLO_EXPORT_MANIFEST": str(sb.root / "manifest.json")}
    return ["zoo", "get", "yolov8n-cls"]


def safe_onnx_external(sb):
    F.onnx_external(sb.case / "evil.onnx", "../../outside/secret.txt")
    return ["predict", "-m", "evil.onnx", "-s", _img(sb)]


def safe_folder_symlink_out(sb):
    d = F.ncnn_dir(sb.case / "evil_ncnn_model", F.good_yaml())
    (d / "model.ncnn.bin").unlink()
    (d / "model.ncnn.bin").symlink_to(sb.secret)
    return ["predict", "-m", "evil_ncnn_model", "-s", _img(sb)]


def safe_truncated_onnx(sb):
    F.tiny_onnx(sb.root / "good.onnx")
    data = (sb.root / "good.onnx").read_bytes()
    (sb.case / "t.onnx").write_bytes(data[: len(data) // 2])
    return ["predict", "-m", "t.onnx", "-s", _img(sb)]


def safe_bitflip_onnx(sb):
    import random

    F.tiny_onnx(sb.root / "good.onnx")
    data = bytearray((sb.root / "good.onnx").read_bytes())
    rnd = random.Random(12)
    for _ in range(16):
        data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
    (sb.case / "f.onnx").write_bytes(bytes(data))
    return ["predict", "-m", "f.onnx", "-s", _img(sb)]


def safe_truncated_pt(sb):
    F.real_checkpoint(sb.root / "good.pt")
    data = (sb.root / "good.pt").read_bytes()
    (sb.case / "t.pt").write_bytes(data[: len(data) * 2 // 3])
    return ["info", "t.pt"]


def safe_bitflip_tflite_meta(sb):
    import zipfile

    blob = b"\0\0\0\0TFL3" + b"\0" * 4088   # the TFLite file identifier, then nothing
    path = sb.case / "f.tflite"
    path.write_bytes(blob)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("metadata.json", json.dumps({"names": repr(F.NAMES), "imgsz": "[32, 32]"}))
    data = bytearray(path.read_bytes())
    data[4096 + 40] ^= 0xFF                     # inside the deflated member
    path.write_bytes(bytes(data))
    return ["info", "f.tflite"]


ONNX = ("onnx", "onnxruntime")
ZOO = ("downloading ",)   # the zoo logs which mirror it is fetching from
CASES = [
    Case("row1-pickle-eocd-info", "1", row1_pickle_eocd),
    Case("row1-pickle-eocd-predict", "1", row1_pickle_predict),
    Case("row1-legacy-tar", "1", row1_legacy_tar),
    Case("row1-zoo-bare-pickle", "1", row1_zoo_bare_pickle, progress=ZOO),
    Case("row2-torchscript-named-pt", "2", row2_torchscript_pt),
    Case("row2-torchscript-info", "2", row2_torchscript_info, exit_zero=True),
    Case("row3-onnx-preprocess-100000", "3", row3_onnx_preprocess, expect="YOLO_EXPORT_MAX_IMGSZ", needs=ONNX,
         imports="onnx,onnxruntime"),
    Case("row4-tflite-1gib-metadata", "4", row4_tflite_bomb, expect="YOLO_EXPORT_MAX_METADATA_BYTES"),
    Case("row5-yaml-billion-laughs", "5", row5_billion_laughs, expect="YOLO_EXPORT_MAX_NODES"),
    Case("row6-shared-nest", "6", row6_shared_nest),
    Case("row7-nc-300000", "7", row7_nc),
    Case("row7-width-64", "7", row7_width),
    Case("row8-deflated-512mb-storage", "8", row8_deflated_storage),
    Case("row9-glob-symlink-loop", "9", row9_symlink_loop, exit_zero=True, stdout="a.png", needs=ONNX, timeout=90,
         imports="onnx,onnxruntime"),
    Case("row10-tfjs-manifest-escape", "10", row10_tfjs_manifest, expect="outside the model folder"),
    Case("row11-bombs-in-folder", "11", row11_bomb_in_folder, exit_zero=True, stdout="good.jpg", needs=ONNX,
         imports="onnx,onnxruntime"),
    Case("row11-bomb-alone", "11", row11_bomb_alone, expect="YOLO_EXPORT_MAX_IMAGE_PIXELS", needs=ONNX,
         imports="onnx,onnxruntime"),
    Case("row12-endless-download", "12", row12_endless_download, expect="YOLO_EXPORT_MAX_DOWNLOAD_BYTES", progress=ZOO),
    *[Case(f"safe-zip-{k}", "safe", _zip_attack(k))
      for k in ("eval", "exec", "getattr", "proto4", "inst", "ext", "copyreg", "ultralytics", "ultralytics_os",
                "numpy_object")],
    Case("safe-trt-header-length", "safe", safe_trt_length, exit_zero=None),
    Case("safe-trt-header-deep", "safe", safe_trt_deep, exit_zero=None),
    Case("safe-trt-header-nested-json", "safe", safe_trt_nested_json, expect="YOLO_EXPORT_MAX_NESTING"),
    Case("safe-trt-header-preprocess", "safe", safe_trt_preprocess, expect="YOLO_EXPORT_MAX_IMGSZ"),
    Case("safe-pte-trailer-length", "safe", safe_pte_length, exit_zero=None),
    Case("safe-pte-trailer-deep", "safe", safe_pte_deep, expect="YOLO_EXPORT_MAX_NESTING"),
    Case("safe-pte-trailer-preprocess", "safe", safe_pte_preprocess, expect="YOLO_EXPORT_MAX_IMGSZ"),
    Case("safe-yaml-python-tag", "safe", safe_yaml_python_tag, expect="not valid YAML"),
    Case("safe-zoo-redirect-file", "safe", safe_zoo_redirect_file, expect="not allowed", progress=ZOO),
    Case("safe-zoo-dotdot-name", "safe", safe_zoo_dotdot, expect="invalid weights manifest", progress=ZOO),
    Case("safe-onnx-external-data-escape", "safe", safe_onnx_external, expect="outside the model folder",
         needs=ONNX, imports="onnx,onnxruntime"),
    Case("safe-folder-symlink-out", "safe", safe_folder_symlink_out, expect="outside the model folder"),
    Case("safe-truncated-onnx", "safe", safe_truncated_onnx, needs=ONNX, imports="onnx,onnxruntime"),
    Case("safe-bitflip-onnx", "safe", safe_bitflip_onnx, exit_zero=None, needs=ONNX, imports="onnx,onnxruntime"),
    Case("safe-truncated-pt", "safe", safe_truncated_pt),
    Case("safe-bitflip-tflite-metadata", "safe", safe_bitflip_tflite_meta),
]

