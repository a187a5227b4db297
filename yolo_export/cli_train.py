"""``yexport train``, ``yexport val`` and ``yexport demo`` (the README's end-to-end job). Imports only click here;
torch and the rest are imported inside the commands."""

from __future__ import annotations

import os

import click
from click.core import ParameterSource

from yolo_export.cli_common import (RAY_LOCAL, _json_opt, _verbose_opt, common_opt, emit_json,
                             inference_opts, open_model, run_command)
from yolo_export.engine.demo import RECIPE  # cheap: no torch at import


def _rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _fmt(v, spec=".4f"):
    return "-" if v is None else format(v, spec)


@click.command("train")
@click.option("--model", "-m", default="yolov8n-cls.yaml", show_default=True,
              help="Model YAML (fresh weights), a .pt to fine-tune, or a zoo name.")
@click.option("--data", "-d", help="'digits' (built in) or an ImageFolder root (train/<class>/*.jpg, val/...).")
@click.option("--epochs", type=int, help="Epochs [20].")
@click.option("--imgsz", type=int, help="Square training size [the model's, 224 for a YAML].")
@click.option("--batch", type=int, help="Total batch size, split across DDP processes [64].")
@click.option("--workers", type=int, help="DataLoader worker processes per rank (0: load in the main process) "
              "[0 below 4 CPUs, else a quarter of them, at most 8].")
@click.option("--optimizer", help="auto, SGD, Adam or AdamW [auto: AdamW below 10k steps, else SGD].")
@click.option("--lr0", type=float, help="Initial learning rate [0.001 Adam/AdamW, 0.01 SGD].")
@click.option("--lrf", type=float, help="Final LR as a fraction of lr0 [0.01].")
@click.option("--momentum", type=float, help="SGD momentum / Adam beta1 [0.9].")
@click.option("--weight-decay", "weight_decay", type=float, help="Weight decay (not on biases and norms) [5e-4].")
@click.option("--warmup-epochs", "warmup_epochs", type=float, help="Linear LR warmup, in epochs [1].")
@click.option("--scheduler", type=click.Choice(["cosine", "linear"]), help="LR decay after warmup [cosine].")
@click.option("--label-smoothing", "label_smoothing", type=float, help="[0.1]")
@click.option("--ema/--no-ema", default=None, help="Keep an EMA of the weights (saved and validated) [on].")
@click.option("--amp/--no-amp", default=None, help="Mixed precision on CUDA [on].")
@click.option("--clip-grad", "clip_grad", type=float, help="Max gradient norm, 0 to turn off [10].")
@click.option("--patience", type=int, help="Stop after this many epochs without a better top-1 [50].")
@click.option("--seed", type=int, help="[0]")
@click.option("--deterministic", is_flag=True, default=None, help="Deterministic algorithms (slower).")
@click.option("--dropout", type=float, help="Dropout before the classifier layer [0].")
@click.option("--fraction", type=float, help="Train on this share of each class (quick runs).")
@click.option("--cache", is_flag=True, default=None, help="Keep decoded training images in RAM.")
@click.option("--scale", type=float, help="RandomResizedCrop min area share [0.5 photos, 0.6 digits].")
@click.option("--fliplr", type=float, help="Horizontal flip probability [0.5 photos, 0 digits].")
@click.option("--hsv-h", "hsv_h", type=float, help="Hue jitter (share of a turn) [0.015 photos, 0 digits].")
@click.option("--hsv-s", "hsv_s", type=float, help="Saturation jitter [0.4 photos, 0 digits].")
@click.option("--hsv-v", "hsv_v", type=float, help="Brightness jitter [0.4 photos, 0.3 digits].")
@click.option("--erasing", type=float, help="Random erasing probability [0.4 photos, 0 digits].")
@click.option("--device", help="cpu, 0, cuda:0 (under torchrun each rank takes its LOCAL_RANK GPU).")
@click.option("--threads", type=int, help="CPU threads per process [$YOLO_EXPORT_THREADS, else the CPUs this "
              "process may use, less the DataLoader workers].")
@click.option("--project", help="Runs folder [runs/classify].")
@click.option("--name", help="Run name [train; train2, ... when taken].")
@click.option("--exist-ok", "exist_ok", is_flag=True, default=None, help="Reuse the run folder if it exists.")
@click.option("--resume", is_flag=False, flag_value="auto", default=None, metavar="[PATH]",
              help="Resume a killed run: PATH to its last.pt, or the newest run under --project.")
@click.option("--pretrained", help="Start from these weights (.pt, ours or Ultralytics-format): matching tensors.")
@click.option("--plots/--no-plots", default=None, help="Write results.png and confusion_matrix.png [on].")
@click.option("--progress/--no-progress", default=None, help="Progress bars on stderr [on].")
@_json_opt
@_verbose_opt
def train_cmd(model, as_json, verbose, **opts):
    """Train a classifier; writes <project>/<name>/ (weights/best.pt, last.pt, results.csv, plots)."""

    def go():
        from yolo_export import YOLO

        kw = {k: v for k, v in opts.items() if v is not None}
        if kw.get("resume") == "auto":
            kw["resume"] = True
        if kw.get("scale") is not None:
            kw["scale"] = (kw["scale"], 1.0)
        if not kw.get("data") and not kw.get("resume"):
            from yolo_export.errors import DatasetError

            raise DatasetError("train needs --data ('digits' or an ImageFolder root), or --resume")
        given_model = click.get_current_context().get_parameter_source("model") != ParameterSource.DEFAULT
        if kw.get("resume") and given_model:
            kw["model"] = model  # checked against the checkpoint: a resumed run keeps its own model
        y = YOLO(model) if not (kw.get("resume") and not given_model) else YOLO("yolov8n-cls.yaml")
        return y.train(**kw)

    out = run_command(go, verbose, as_json)
    if not _rank0():
        return
    if as_json:
        emit_json(out)
        return
    click.echo(f"best.pt: {out['best']}  top1 {_fmt(out['top1'])}  top5 {_fmt(out['top5'])}  "
               f"({out['epochs_run']} epochs, {out['time_s']:.1f}s, {out['images_per_s']:.0f} train img/s)")


@click.command("val")
@click.option("--model", "-m", required=True, help="A .pt or any exported model (best.onnx, ..._openvino_model/).")
@click.option("--data", "-d", help="'digits' or an ImageFolder root [the dataset the model was trained on].")
@click.option("--split", default="val", show_default=True, type=click.Choice(["train", "val", "test"]))
@common_opt("batch", default=32, show_default=True, help="Images per inference call.")
@common_opt("imgsz", help="Input size (PyTorch models only; exports keep theirs).")
@click.option("--device", default=None)
@click.option("--workers", type=int, default=0, show_default=True)
@click.option("--half", is_flag=True, help="fp16 on CUDA (PyTorch).")
@click.option("--predictions", is_flag=True, help="Add each image's file and predicted class to the JSON.")
@click.option("--output", "-o", help="Write one row per image (path, label, top1, top5, correct) to FILE "
              "(.jsonl, .parquet or .csv); the same rows with --ray.")
@inference_opts
def val_cmd(model, data, split, batch, imgsz, device, workers, half, predictions, output, fast_preprocess,
            ray_address, threads, names, as_json, verbose):
    """Top-1/top-5, per-class accuracy, confusion matrix and speed of MODEL on a dataset split."""

    def run():
        keep = predictions or bool(output)
        if ray_address is not None:
            from yolo_export.distributed import ray_val

            return ray_val(model, data, split=split, batch=batch, imgsz=imgsz,
                           address=None if ray_address == RAY_LOCAL else ray_address, device=device or "cpu",
                           progress=not as_json, threads=threads, predictions=keep)

        y = open_model(model, device, names, imgsz, threads)
        return y.val(data=data, split=split, batch=batch, imgsz=imgsz, device=device, workers=workers, half=half,
                     predictions=keep, progress=not as_json, fast_preprocess=fast_preprocess,
                     threads=threads)

    def go():
        if output:
            from yolo_export.distributed import check_val_output

            check_val_output(output)   # before the work, not after it
        m = run()
        if output:
            from yolo_export.distributed import write_val_rows

            m["output"] = write_val_rows(m, output, m["names"])
            if not predictions:
                m.pop("files", None), m.pop("predictions", None)
        return m

    m = run_command(go, verbose, as_json)
    if as_json:
        emit_json(dict(m))
        return
    click.echo(f"{m['model']} ({m['format']}) on {m['data']}/{m['split']}: top1 {m['top1']:.4f}  "
               f"top5 {m['top5']:.4f}  ({m['n']} images)")
    for name, acc in m["per_class"].items():
        click.echo(f"  {name:>12}: {_fmt(acc)}")
    sp = m["speed"]
    click.echo(f"speed per image: preprocess {sp['preprocess']:.2f} ms, inference {sp['inference']:.2f} ms, "
               f"postprocess {sp['postprocess']:.2f} ms; {m.get('threads')} runtime thread(s)")
    if m.get("output"):
        click.echo(f"{m['output']['rows']} per-image row(s) -> {m['output']['output']}", err=True)


# ----------------------------------------------------------------------------------------------- demo
@click.command("demo")
@click.option("--project", default="runs/demo", show_default=True, help="Where the run and its exports go.")
@click.option("--epochs", type=int, default=RECIPE["epochs"], show_default=True)
@click.option("--imgsz", type=int, default=RECIPE["imgsz"], show_default=True)
@click.option("--batch", type=int, default=RECIPE["batch"], show_default=True)
@click.option("--formats", help="Comma-separated formats to export [every format that can export here].")
@click.option("--workers", type=int, default=RECIPE["workers"], show_default=True)
@click.option("--threads", type=int, default=RECIPE["threads"], show_default=True,
              help="CPU threads for training (1 copes best with a busy shared CPU).")
@click.option("--device", default=None)
@click.option("--timeout", type=float, default=600, show_default=True,
              help="Seconds allowed per format (each runs in its own child process).")
@_json_opt
@_verbose_opt
def demo_cmd(project, epochs, imgsz, batch, formats, workers, threads, device, timeout, as_json, verbose):
    """The whole path on the built-in digits: train yolov8n-cls, validate, export to every format installed,
    validate each export, predict a few images, print a results table."""

    def go():
        from yolo_export.engine.demo import run_demo

        return run_demo(project, epochs, imgsz, batch, [f.strip() for f in formats.split(",")] if formats else None,
                        workers, threads, device, timeout, progress=not as_json)

    out = run_command(go, verbose, as_json)
    if as_json:
        emit_json(out)
        return
    _print_demo(out)


def _print_demo(out: dict) -> None:
    tr = out["train"]
    click.echo(f"\ntrained yolov8n-cls on digits: best epoch {tr['best_epoch']}/{tr['epochs_run']}, top1 "
               f"{tr['top1']:.4f}, top5 {tr['top5']:.4f} in {tr['time_s']:.0f}s ({tr['images_per_s']:.0f} img/s); "
               f"run folder {tr['save_dir']}")
    click.echo(f"\n{'format':<12} {'status':<14} {'size MB':>8} {'export s':>9} {'top1':>7} {'top5':>7} "
               f"{'agree':>7} {'ms/img':>7}  note")
    for r in out["formats"]:
        click.echo(f"{r['format']:<12} {r['status']:<14} {_fmt(r['size_mb'], '8.2f'):>8} "
                   f"{_fmt(r['export_s'], '9.1f'):>9} {_fmt(r['top1']):>7} {_fmt(r['top5']):>7} "
                   f"{_fmt(r['agree'], '.1%'):>7} {_fmt(r['ms_per_img'], '.2f'):>7}  {r['note']}")
    p = out["predict"]
    click.echo(f"\npredictions with {p['model']}:")
    for r in p["results"]:
        click.echo(f"  {r['image']}: true {r['true']}, predicted {r['pred']} ({r['conf']:.2f})")
    click.echo(f"\ndone in {out['time_s']:.0f}s")


def register(group) -> None:
    group.add_command(train_cmd)
    group.add_command(val_cmd)
    group.add_command(demo_cmd)
