"""``yexport demo`` after training: its table is the benchmark matrix's rows (one per format, fp32, each row in
its own child process), its predictions come from the fastest export that passed; the printed summary's shape."""

from pathlib import Path

from click.testing import CliRunner


def test_demo_rows_come_from_the_matrix(tiny_pt, tmp_path):
    from yolo_export.engine.demo import fastest_export, format_rows, predictions

    rows = format_rows(tiny_pt, ["torchscript", "engine"], str(tmp_path), None, 300, False)
    by = {r["format"]: r for r in rows}
    assert list(by) == ["pytorch", "torchscript", "engine"]
    src = by["pytorch"]
    assert src["status"] == "ok" and src["path"] == str(tiny_pt) and src["note"].startswith("source")
    ts = by["torchscript"]
    assert ts["status"] == "ok" and ts["agree"] == 1.0 and ts["top1"] == src["top1"] and ts["ms_per_img"] > 0
    assert Path(ts["path"]).is_file() and ts["export_s"] is not None
    assert by["engine"]["status"] in ("skipped", "ok", "exported") and (by["engine"]["note"] or by["engine"]["top1"])
    assert fastest_export(rows) == ts["path"] or by["engine"]["status"] == "ok"
    from yolo_export.data.datasets import resolve_dataset
    from yolo_export.data.samples import list_split_images

    imgs = [str(p) for p in list_split_images(resolve_dataset("digits"), "val")[:2]]
    preds = predictions(ts["path"], imgs)
    assert [p["image"] for p in preds] == imgs and all(p["true"] == Path(p["image"]).parent.name for p in preds)


def test_demo_summary_shape():
    from yolo_export.cli_train import _print_demo
    from yolo_export.engine.demo import STATUS

    out = {"train": {"best_epoch": 3, "epochs_run": 4, "top1": 0.9, "top5": 1.0, "time_s": 12.0,
                     "images_per_s": 100.0, "save_dir": "runs/demo/train"},
           "formats": [{"format": "pytorch", "status": "ok", "size_mb": 2.97, "export_s": None, "top1": 0.9,
                        "top5": 1.0, "agree": 1.0, "ms_per_img": 0.5, "note": "source (EMA weights, fp16 stored)"},
                       {"format": "onnx", "status": STATUS["passed"], "size_mb": 5.8, "export_s": 1.8, "top1": 0.9,
                        "top5": 1.0, "agree": 1.0, "ms_per_img": 0.4, "note": ""}],
           "predict": {"model": "m.onnx", "results": [{"image": "val/0/1.png", "true": "0", "pred": "0", "conf": 0.9}]},
           "time_s": 30.0}
    runner = CliRunner()
    res = runner.invoke(__import__("click").command()(lambda: _print_demo(out)))
    lines = res.output.splitlines()
    assert lines[1].startswith("trained yolov8n-cls on digits: best epoch 3/4, top1 0.9000")
    assert lines[3].split() == ["format", "status", "size", "MB", "export", "s", "top1", "top5", "agree", "ms/img",
                                "note"]
    assert lines[5].split()[:3] == ["onnx", "ok", "5.80"] and "100.0%" in lines[5]
    assert "predictions with m.onnx:" in res.output and res.output.rstrip().endswith("done in 30s")
