"""The budgets and path rules of yolo_export.limits, in-process and fast (the corpus runs them through the CLI)."""

from __future__ import annotations

import json
import zipfile

import pytest

from yolo_export import limits, metadata
from yolo_export.errors import LimitError, MetadataError, YoloExportError


def test_violation_is_one_line_naming_field_limit_and_override(monkeypatch):
    with pytest.raises(LimitError) as e:
        metadata.decode({"names": "{0: 'a'}", "imgsz": "[5000, 5000]"}, "m.onnx")
    msg = str(e.value)
    assert "\n" not in msg and "m.onnx" in msg and "imgsz[0]" in msg and "4,096" in msg
    assert "YOLO_EXPORT_MAX_IMGSZ" in msg
    monkeypatch.setenv("YOLO_EXPORT_MAX_IMGSZ", "8192")
    assert metadata.decode({"names": "{0: 'a'}", "imgsz": "[5000, 5000]"})["imgsz"] == [5000, 5000]
    monkeypatch.setenv("YOLO_EXPORT_MAX_IMGSZ", "lots")
    with pytest.raises(LimitError, match="YOLO_EXPORT_MAX_IMGSZ='lots' is not a number"):
        metadata.decode({"imgsz": "[5, 5]"})


@pytest.mark.parametrize("pp, field", [({"resize": 0, "crop": 1}, "preprocess.resize"),
                                       ({"resize": 2, "crop": True}, "preprocess.crop"),
                                       ({"resize": "224", "crop": 224}, "preprocess.resize"),
                                       ({"mean": [0] * 1000}, "preprocess.mean")])
def test_preprocess_types(pp, field):
    with pytest.raises(YoloExportError, match=field.replace(".", r"\.")):
        metadata.decode({"preprocess": json.dumps(pp)})


def test_yaml_budgets():
    laughs = "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdef", "bcdefg"))
    with pytest.raises(LimitError, match="YOLO_EXPORT_MAX_NODES"):
        limits.load_yaml(laughs)
    with pytest.raises(MetadataError, match="recursive alias"):
        limits.load_yaml("a: &a [*a]\n")
    with pytest.raises(LimitError, match="YOLO_EXPORT_MAX_NESTING"):
        limits.load_yaml("a:\n" + "".join("  " * i + "- \n" for i in range(1, 40)) + "  " * 40 + "- x\n")
    assert limits.load_yaml("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}


def test_text_depth_ignores_brackets_in_strings():
    assert limits.text_depth('{"a": "[[[[[[", "b": [1, [2]]}') == 3
    assert limits.text_depth("{'a': '{{{{', 'b': ('x',)}") == 2


def test_zip_member_declared_size_refused_before_reading(tmp_path, monkeypatch):
    p = tmp_path / "x.tflite"
    p.write_bytes(b"\0" * 64)
    with zipfile.ZipFile(p, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("metadata.json", " " * 5000)
    monkeypatch.setenv("YOLO_EXPORT_MAX_METADATA_BYTES", "4096")
    with pytest.raises(LimitError, match=r"declared size\) is 5,000 bytes, over the limit of 4,096"):
        limits.zip_member(p, lambda n: n == "metadata.json", "metadata.json")


def test_contained(tmp_path):
    (tmp_path / "m").mkdir()
    assert limits.contained(tmp_path / "m", "w.bin", "f") == (tmp_path / "m" / "w.bin").resolve()
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(YoloExportError):
            limits.contained(tmp_path / "m", bad, "f")
    (tmp_path / "m" / "link").symlink_to(tmp_path)
    with pytest.raises(YoloExportError, match="outside the model folder"):
        limits.contained(tmp_path / "m", "link/secret", "f")


def test_check_folder_refuses_links_out_and_admits_links_in(tmp_path):
    d = tmp_path / "x_ncnn_model"
    d.mkdir()
    (d / "model.ncnn.param").write_text("p")
    (d / "alias.param").symlink_to("model.ncnn.param")
    limits.check_folder(d)
    (d / "model.ncnn.bin").symlink_to(tmp_path / "secret")
    with pytest.raises(YoloExportError, match="model.ncnn.bin is a link .* outside the model folder"):
        limits.check_folder(d)


def test_zoo_download_cap_without_a_size(tmp_path, monkeypatch):
    """A mirror that streams without Content-Length for an entry with no size: stopped at the cap, file deleted."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from yolo_export import zoo
    from yolo_export.errors import DownloadError

    class Endless(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b"\0" * (1 << 20))
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("YOLO_EXPORT_MAX_DOWNLOAD_BYTES", str(4 << 20))
    dst = tmp_path / "w.pt"
    try:
        with pytest.raises(DownloadError, match="YOLO_EXPORT_MAX_DOWNLOAD_BYTES") as e:
            zoo.download_file(f"http://127.0.0.1:{srv.server_address[1]}/w.pt", dst, retries=0, progress=False)
    finally:
        srv.shutdown()
    assert "4,194,304" in str(e.value)
    assert not dst.exists() and not list(tmp_path.iterdir())


# Found by the torchscript_metadata fuzz target: a zip64 end-of-directory locator naming several disks makes
# zipfile.is_zipfile raise instead of answering.
MULTI_DISK_ZIP = (
    'UEsDBBQAAAAAACZfdB7MXZUxgl0sIFwicmVzaXplXCI6IDM2LCBcInN0ZFwiOiBbMSwgMSwgMV19In1QSwMEFAAAAAAAJh6CXdGe'
    'Z1UCAAAAAgAAAAkAAABtL3ZlcnNpb24zClBLAagAAAAAAAAAAhQDFP////8AJh6CXXSVX8wxAQEAABIAAABtL2V4dHJhL2NvbmZp'
    'Zy50eHR7ImRlc2NyaXB0aW9uIjogZnkiLCAiYmF0Y+giOiAiAABQSwYHAIABYQEAAG0vdmVyc2lvblBLBQYAAAAAAgACAQAAbS92'
    'ZXJvaW5zUEsFDwAAAAACAAKAdwAAAIoBAAAAAA=='
)


def test_multi_disk_zip_record_is_one_of_our_errors(tmp_path):
    import base64

    from yolo_export import registry
    from yolo_export.errors import YoloExportError
    from yolo_export.limits import is_zip

    p = tmp_path / "m.torchscript"
    p.write_bytes(base64.b64decode(MULTI_DISK_ZIP))
    assert is_zip(p) is False
    with pytest.raises(YoloExportError):
        registry.get("torchscript").read_metadata(p)


def test_zip_version_the_reader_cannot_extract_is_a_checkpoint_error(tmp_path):
    """Found by the checkpoint fuzz target: a central directory entry needing zip version 25.5 made zipfile raise
    NotImplementedError out of the checkpoint reader."""
    import zipfile

    from yolo_export.errors import CheckpointError
    from yolo_export.nn.checkpoint import load_checkpoint

    p = tmp_path / "v.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    blob = bytearray(p.read_bytes())
    cd = blob.rindex(b"PK\x01\x02")
    blob[cd + 6] = 255  # "version needed to extract": 25.5
    p.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="zip file version 25.5"):
        load_checkpoint(p)
