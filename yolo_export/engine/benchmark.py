"""The benchmark matrix: every format x precision -> export, parity against the .pt, accuracy, latency.

For each row: export (time, size), run the artefact as a loaded model on the val split (exactly as predict and
val run it), compare its probabilities with the source .pt's (max abs diff, top-1 agreement), count top-1/top-5
against the labels, and time inference (ms per image at batch 1, images/s at a larger batch; after warm-up,
median of repeated runs). A format that cannot run here is a row with its status and reason, never a gap.

Statuses:
  passed          exported, parity within the format's tolerance (and top-1 >= --floor when given)
  failed_parity   exported, but disagrees with the .pt beyond tolerance
  failed_accuracy exported, parity fine, top-1 below --floor
  export_failed   the export raised (reason: its one-line error)
  not_available   this machine cannot export it (missing extra, no GPU, not macOS, missing binary)
  exported_only   exported, but this machine cannot run it (e.g. CoreML prediction needs macOS)
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from yolo_export import registry
from yolo_export.errors import ArgumentError
from yolo_export.utils import LOGGER, file_size_mb

PRECISIONS = ("fp32", "fp16", "int8")
STATUSES = ("passed", "failed_parity", "failed_accuracy", "export_failed", "not_available", "exported_only")


def supported_precisions(backend) -> list[str]:
    return list(backend.precisions)  # declared by each backend (registry.Backend.precisions)


def machine_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = " + " + torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    return f"{cpu} x{os.cpu_count()}{gpu}"


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s).strip("-").lower()[:60]


def load_split(data, split: str, pp: dict, max_images: int | None):
    from yolo_export.data.datasets import resolve_dataset, scan_split
    from yolo_export.data.transforms import preprocess

    root = resolve_dataset(data)
    samples, names = scan_split(root, split)
    if max_images and len(samples) > max_images:
        idx = np.random.default_rng(0).permutation(len(samples))[:max_images]
        samples = [samples[i] for i in sorted(idx)]
    x = np.stack([preprocess(p, pp) for p, _ in samples])
    y = np.array([c for _, c in samples])
    return x, y, names


def run_batches(ab, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([ab.run(x[i:i + batch]) for i in range(0, len(x), batch)])


def time_runner(ab, x: np.ndarray, batch: int, rounds: int, warmup: int) -> tuple[float, float]:
    x1, xb = x[:1], x[:batch]
    if len(xb) < batch:
        xb = np.concatenate([xb] * (batch // max(len(xb), 1) + 1))[:batch]
    for _ in range(warmup):
        ab.run(x1)
        ab.run(xb)
    t1, tb = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(5):
            ab.run(x1)
        t1.append((time.perf_counter() - t) / 5)
        t = time.perf_counter()
        ab.run(xb)
        tb.append(time.perf_counter() - t)
    return statistics.median(t1) * 1e3, batch / statistics.median(tb)


def topk(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    order = np.argsort(-probs, axis=1)
    k = min(5, probs.shape[1])
    return float((order[:, 0] == y).mean()), float((order[:, :k] == y[:, None]).any(1).mean())


@dataclass
class Row:
    """One line of the matrix (its fields, in this order, are the JSON/CSV columns)."""

    format: str
    precision: str
    status: str | None = None
    reason: str | None = None
    size_mb: float | None = None
    export_s: float | None = None
    top1: float | None = None
    top5: float | None = None
    ms_per_img: float | None = None
    fps: float | None = None
    max_abs_diff: float | None = None
    top1_agreement: float | None = None
    n_images: int | None = None
    threads: int | None = None
    batch: int | None = None
    path: str | None = None       # the artefact (under the run's artefacts/ folder)

    def done(self, status: str, reason: str = "") -> dict:
        self.status, self.reason = status, reason
        return asdict(self)


FIELDS = tuple(f.name for f in fields(Row))


@dataclass
class Matrix:
    """What every row of one run shares: the saved source model, the val images, the reference answers."""

    source: Path                  # the .pt every row exports from
    inputs: Path                  # the preprocessed val images (.npy), read by rows run in a child process
    x: np.ndarray
    y: np.ndarray
    ref_probs: np.ndarray
    imgsz: int
    data: str
    art_dir: Path
    device: str = "cpu"
    batch: int = 32
    rounds: int = 5
    warmup: int = 2
    floor: float | None = None
    threads: int | None = None
    isolate: bool = True          # each row in a child process (isolation.py): a crash or hang is that row's status
    timeout: float | None = 600


@dataclass
class Job:
    """One row's export-and-run, handed to a child process (picklable: names, paths and numbers only)."""

    backend: object               # the Backend instance (plain class attributes: pickled by its class's name)
    precision: str
    kwargs: dict
    source: str
    inputs: str
    device: str
    batch: int
    rounds: int
    warmup: int
    threads: int | None
    run: bool                     # False: this machine can export the format but not run it
    log_level: int


def benchmark(model, data="digits", imgsz: int | None = None, formats=None, precisions=None, device: str = "cpu",
              batch: int = 32, rounds: int = 5, warmup: int = 2, floor: float | None = None, split: str = "val",
              max_images: int | None = 1000, project: str | Path = "runs/benchmark", name: str | None = None,
              progress: bool = True, keep: bool = True, threads: int | None = None, isolate: bool = True,
              timeout: float | None = 600) -> dict:
    """Run the matrix. ``formats``/``precisions``: lists (None = every registered format / every precision
    each supports; ``precisions="default"``: each format at its own default). ``isolate``: run each row in a child
    process that ``timeout`` seconds bound (a runtime that crashes or hangs fails its row only).
    Returns ``{"rows": [...], "machine": ..., "versions": ..., "files": ...}``."""
    from tqdm import tqdm

    from yolo_export._version import __version__
    from yolo_export.threads import resolve

    out_dir = Path(project) / (name or f"{Path(str(model)).stem}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    settings = {"device": device, "batch": batch, "rounds": rounds, "warmup": warmup, "floor": floor,
                "threads": resolve(threads), "isolate": isolate, "timeout": timeout}
    m, rows = _prepare(model, data, imgsz, split, max_images, out_dir / "artefacts", settings)
    chosen, plan = plan_rows(formats, precisions)
    bar = tqdm(plan, desc="benchmark", disable=not progress, dynamic_ncols=True)
    for b, prec in bar:
        bar.set_postfix_str(f"{b.name} {prec}")
        rows.append(measure(m, b, prec))
    bar.close()
    result = {"model": str(model), "data": str(data), "split": split, "imgsz": m.imgsz, "device": device,
              "machine": machine_name(), "date": _dt.datetime.now().isoformat(timespec="seconds"),
              "versions": _versions(chosen, __version__), "floor": floor, "rows": rows}
    result["files"] = write_reports(result, out_dir)
    if not keep:
        import shutil

        shutil.rmtree(m.art_dir, ignore_errors=True)
    return result


def plan_rows(formats=None, precisions=None) -> tuple[list, list]:
    """The backends chosen and the (backend, precision) rows to measure: each format at the ``precisions`` asked
    for that it declares (all it declares when None; its own default, the first it declares, for "default")."""
    if formats:
        chosen = [registry.get(f) for f in formats]
    else:
        chosen = [b for b in registry.all_backends() if not b.is_source]  # the source is the reference row
    plan = []
    for b in chosen:
        own = supported_precisions(b)
        wanted = own[:1] if precisions == "default" else [p for p in (precisions or own) if p in own]
        plan += [(b, p) for p in wanted if p in PRECISIONS]
    return chosen, plan


def _prepare(model, data, imgsz, split, max_images, art_dir: Path, settings: dict) -> tuple[Matrix, list]:
    """Load the source, save it where every row exports from, read the val split, measure the reference row."""
    from yolo_export.autobackend import LoadedModel
    from yolo_export.data.transforms import default_preprocess, with_imgsz
    from yolo_export.engine.model import YOLO

    src = YOLO(model)
    if src.model is None:
        raise ArgumentError("benchmark needs a PyTorch model (.pt or .yaml) to export from")
    imgsz = int(imgsz or src.imgsz)
    pp = with_imgsz(src.preprocess, imgsz) if src.preprocess else default_preprocess(imgsz)
    x, y, names = load_split(data, split, pp, max_images)
    if len(names) != len(src.names):
        LOGGER.warning(f"warning: the dataset has {len(names)} classes, the model {len(src.names)}")
    art_dir.mkdir(parents=True, exist_ok=True)
    src.model.imgsz = imgsz
    src.save(art_dir / "model.pt")
    np.save(art_dir / "inputs.npy", x)
    m = Matrix(art_dir / "model.pt", art_dir / "inputs.npy", x, y, None, imgsz, data, art_dir, **settings)
    ref = LoadedModel(src.model, device=m.device, threads=m.threads)
    m.ref_probs = run_batches(ref, x, m.batch)
    row = Row(registry.source_backend().name, "fp32", size_mb=round(file_size_mb(m.source), 3), export_s=0.0,
              max_abs_diff=0.0, top1_agreement=1.0, n_images=len(x), threads=ref.threads, batch=m.batch,
              path=str(m.source))
    row.top1, row.top5 = topk(m.ref_probs, y)
    row.ms_per_img, row.fps = time_runner(ref, x, m.batch, m.rounds, m.warmup)
    return m, [row.done("passed", "reference")]


def export_kwargs(b, prec: str, m: Matrix) -> tuple[dict | None, str]:
    """The export arguments of one row, or (None, why this machine cannot make that row)."""
    ok, why = b.is_available()
    if not ok:
        return None, why
    kw = {"imgsz": m.imgsz, "verify": False, "device": m.device, "threads": m.threads}
    if prec == "fp16":
        kw["half"] = True
    elif prec == "int8":
        # --calib only where --int8 calibrates (MNN, CoreML quantise the weights only): an option must apply
        kw.update(int8=True, data=m.data, calib=None if m.data or not b.calibrates else "synthetic")
    if "dynamic" in b.args:
        kw.update(dynamic=True, batch=m.batch)
    try:
        b.resolve_args(dict(kw))
    except Exception as e:  # noqa: BLE001 - e.g. fp16 TorchScript needs CUDA: this machine can't make that row
        return None, _one_line(e)
    out = m.art_dir / f"{b.name}-{prec}"
    out.mkdir(exist_ok=True)
    kw["output"] = str(b.output_path(out / "model", kw))
    return kw, ""


def measure(m: Matrix, b, prec: str) -> dict:
    """One row: export and run (in a child process when ``m.isolate``), then judge it here."""
    from yolo_export.isolation import run_here, run_isolated

    row = Row(b.name, prec, threads=m.threads, batch=m.batch, n_images=len(m.x))
    kw, why = export_kwargs(b, prec, m)
    if kw is None:
        return row.done("not_available", why)
    rok, rwhy = b.runtime_available()
    job = Job(b, prec, kw, str(m.source), str(m.inputs), m.device, m.batch, m.rounds, m.warmup, m.threads,
              rok, LOGGER.level)
    out = run_isolated(export_and_run, job, m.timeout) if m.isolate else run_here(export_and_run, job)
    got = out.value or (out.messages[-1] if out.messages else None)
    if got is None:
        return row.done("export_failed", out.error or "no artefact")
    row.export_s, row.size_mb, row.path = got["export_s"], got["size_mb"], got["path"]
    if not rok:
        return row.done("exported_only", rwhy)
    if out.error:
        return row.done("failed_parity", f"cannot run: {out.error}")
    row.threads, row.ms_per_img, row.fps = got["threads"], got["ms_per_img"], got["fps"]
    return judge_row(row, b, got["probs"], m)


def judge_row(row: Row, b, probs: np.ndarray, m: Matrix) -> dict:
    """The parity judge (verify.judge, the same rule as the export-time check) and the accuracy floor."""
    from yolo_export.verify import judge

    row.top1, row.top5 = topk(probs, m.y)
    res, problems = judge(m.ref_probs, probs, b.tolerance, row.precision, real_images=True)
    row.max_abs_diff, row.top1_agreement = res["max_abs_diff"], res["top1_agreement"]
    if problems:
        return row.done("failed_parity", "; ".join(problems))
    if m.floor is not None and row.top1 < m.floor:
        return row.done("failed_accuracy", f"top-1 {row.top1:.3f} < floor {m.floor}")
    return row.done("passed")


def export_and_run(job: Job, report) -> dict:
    """Export one row's artefact and run it on the val images (the part of a row that may crash or hang).
    ``report`` gets the export's figures as soon as they exist, so a crash while running still shows them."""
    from yolo_export.autobackend import LoadedModel
    from yolo_export.engine.model import YOLO

    LOGGER.setLevel(job.log_level)
    if job.backend.name not in registry.names():  # registered by hand in the caller (not an entry point)
        registry.register(job.backend)
    t0 = time.perf_counter()
    path = YOLO(job.source).export(job.backend.name, **job.kwargs)
    got = {"path": str(path), "export_s": round(time.perf_counter() - t0, 2), "size_mb": round(file_size_mb(path), 3)}
    report(dict(got))
    if not job.run:
        return got
    x = np.load(job.inputs)
    ab = LoadedModel(path, device=job.device, threads=job.threads)
    try:
        got["threads"] = ab.threads  # what the runtime itself reports
        got["probs"] = run_batches(ab, x, job.batch)
        got["ms_per_img"], got["fps"] = time_runner(ab, x, job.batch, job.rounds, job.warmup)
    finally:
        close = getattr(ab, "close", None)
        if close:
            close()
    return got


def _one_line(e: Exception) -> str:
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:300]


def _versions(backends, ours) -> dict:
    import torch

    v = {"yolo-export": ours, "python": platform.python_version(), "torch": torch.__version__}
    for b in backends:
        if not b.missing():
            ver = b.version()
            if ver:
                v[b.name] = ver
    return v


# ------------------------------------------------------------------------------------------- reports
def _fmt(v, spec):
    return "" if v is None else format(v, spec)


def table(result: dict) -> str:
    hdr = (f"{'format':<12} {'prec':<5} {'status':<15} {'size MB':>8} {'export s':>8} {'top-1':>6} {'top-5':>6} "
           f"{'ms/img':>7} {'img/s':>8} {'max diff':>9} {'agree':>6}  reason")
    lines = [hdr, "-" * len(hdr)]
    for r in result["rows"]:
        lines.append(
            f"{r['format']:<12} {r['precision']:<5} {r['status']:<15} {_fmt(r['size_mb'], '8.2f'):>8} "
            f"{_fmt(r['export_s'], '8.1f'):>8} {_fmt(r['top1'], '6.3f'):>6} {_fmt(r['top5'], '6.3f'):>6} "
            f"{_fmt(r['ms_per_img'], '7.2f'):>7} {_fmt(r['fps'], '8.0f'):>8} {_fmt(r['max_abs_diff'], '9.1e'):>9} "
            f"{_fmt(r['top1_agreement'], '6.1%'):>6}  {r['reason'] or ''}")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    cols = ["format", "precision", "status", "size_mb", "export_s", "top1", "top5", "ms_per_img", "fps",
            "max_abs_diff", "top1_agreement", "reason"]
    out = [f"# Benchmark: {result['model']} on {result['data']} ({result['split']}), imgsz {result['imgsz']}",
           "", f"Machine: {result['machine']} · {result['date']} · device {result['device']}", "",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()), "",
           "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in result["rows"]:
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float):
                v = f"{v:.2e}" if c == "max_abs_diff" else f"{v:.3f}" if c in ("top1", "top5", "top1_agreement") \
                    else f"{v:.2f}"
            cells.append("" if v is None else str(v).replace("|", "/"))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write_reports(result: dict, out_dir: Path) -> dict:
    from yolo_export.metadata import plain   # the one encoding rule
    from yolo_export.utils import atomic_write_bytes

    stem = f"benchmark-{_slug(result['machine'])}-{result['date'][:10]}"
    files = {"json": out_dir / f"{stem}.json", "csv": out_dir / f"{stem}.csv", "md": out_dir / f"{stem}.md",
             "png": out_dir / f"{stem}.png"}
    atomic_write_bytes(files["json"], json.dumps(result, indent=2, default=plain).encode())
    atomic_write_bytes(files["md"], markdown(result).encode())
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(FIELDS))
    w.writeheader()
    for r in result["rows"]:
        w.writerow({k: r.get(k) for k in FIELDS})
    atomic_write_bytes(files["csv"], buf.getvalue().encode())
    try:
        chart(result, files["png"])
    except Exception as e:  # noqa: BLE001 - a chart must not sink the run
        LOGGER.warning(f"warning: chart not written ({e})")
        files.pop("png")
    return {k: str(v) for k, v in files.items()}


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r.get("size_mb") is not None and r.get("ms_per_img") is not None]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    colours = {"passed": "tab:green", "failed_parity": "tab:red", "failed_accuracy": "tab:orange"}
    markers = {"fp32": "o", "fp16": "s", "int8": "^"}
    for r in rows:
        ax.scatter(r["size_mb"], r["ms_per_img"], s=70, c=colours.get(r["status"], "tab:gray"),
                   marker=markers.get(r["precision"], "o"), edgecolors="black", linewidths=0.5, zorder=3)
        label = f"{r['format']} {r['precision']}" + (f"\n{r['top1']:.3f}" if r.get("top1") is not None else "")
        ax.annotate(label, (r["size_mb"], r["ms_per_img"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    lat = [r["ms_per_img"] for r in rows if r["ms_per_img"]]
    if lat and max(lat) / max(min(lat), 1e-9) > 20:
        ax.set_yscale("log")
    ax.set_xlabel("artefact size (MB)")
    ax.set_ylabel("latency, batch 1 (ms / image)")
    ax.set_title(f"{Path(result['model']).name} · imgsz {result['imgsz']} · {result['machine'][:60]}", fontsize=9)
    ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=c, label=s) for s, c in colours.items()]
    handles += [Line2D([], [], marker=m, ls="", color="gray", label=p) for p, m in markers.items()]
    ax.legend(handles=handles, fontsize=7, loc="best", title="status / precision (label: top-1)", title_fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def regressions(result: dict, baseline: dict) -> list[str]:
    """Rows that passed in ``baseline`` (a previous result or a {"passed": ["fmt/prec", ...]} file) but not now."""
    before = set(baseline.get("passed") or [f"{r['format']}/{r['precision']}" for r in baseline.get("rows", [])
                                             if r.get("status") == "passed"])
    now = {f"{r['format']}/{r['precision']}": r for r in result["rows"]}
    out = []
    for key in sorted(before):
        r = now.get(key)
        if r is None:
            continue  # not in this run's selection
        if r["status"] != "passed":
            out.append(f"{key}: {r['status']} ({r.get('reason') or ''})")
    return out
