"""Training a YOLOv8 classifier on an ImageFolder dataset (or the built-in ``digits``), on one process or under
``torchrun`` (DDP: NCCL on CUDA, gloo on CPU; only rank 0 writes files).

A run writes ``<project>/<name>/``: ``args.yaml``, ``results.csv``, ``results.png``, ``confusion_matrix.png`` and
``weights/{last,best}.pt``. Both checkpoints hold the EMA weights in fp16 (our safe format, written atomically);
``last.pt`` also holds ``train_state`` (fp32 model and EMA weights, optimizer, LR schedule, epoch, RNG states,
history) so that ``resume`` continues exactly where a killed run stopped (at its last finished epoch).
"""

from __future__ import annotations

import copy
import csv
import io
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from yolo_export.errors import ArgumentError, CheckpointError, Interrupted, YoloExportError
from yolo_export.utils import LOGGER, clean_stale

DEFAULTS = {
    "data": None, "epochs": 20, "imgsz": None, "batch": 64, "workers": None, "optimizer": "auto", "lr0": None,
    "lrf": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "warmup_epochs": 1.0, "scheduler": "cosine",
    "label_smoothing": 0.1, "ema": True, "ema_decay": 0.9999, "ema_tau": 2000, "amp": True, "clip_grad": 10.0,
    "patience": 50, "seed": 0, "deterministic": False, "device": None, "project": "runs/classify", "name": "train",
    "exist_ok": False, "resume": False, "pretrained": None, "dropout": 0.0, "fraction": None, "cache": False,
    "scale": None, "ratio": None, "fliplr": None, "hsv_h": None, "hsv_s": None, "hsv_v": None, "erasing": None,
    "val": True, "plots": True, "progress": True, "threads": None,
}
OPTIMIZERS = ("auto", "SGD", "Adam", "AdamW")


# ----------------------------------------------------------------------------------------- helpers
def unwrap(model):
    return model.module if hasattr(model, "module") else model


class ModelEMA:
    """Exponential moving average of a model's weights and buffers; decay ramps up as ``d * (1 - exp(-u/tau))``."""

    def __init__(self, model, decay: float = 0.9999, tau: float = 2000, updates: int = 0):
        self.ema = copy.deepcopy(unwrap(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = float(decay), float(tau), int(updates)

    def update(self, model):
        import torch

        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        msd = unwrap(model).state_dict()
        with torch.no_grad():
            for k, v in self.ema.state_dict().items():
                if v.dtype.is_floating_point:
                    v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
                else:
                    v.copy_(msd[k])


class LRSchedule:
    """Per-iteration LR factor: linear warmup from 0.1 to 1, then cosine or linear decay to ``lrf``."""

    def __init__(self, optimizer, total: int, warmup: int, lrf: float, kind: str = "cosine"):
        if kind not in ("cosine", "linear"):
            raise ArgumentError(f"unknown scheduler '{kind}' (use cosine or linear)")
        self.opt, self.total, self.warmup, self.lrf, self.kind = optimizer, max(total, 1), warmup, lrf, kind
        self.it = 0
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])

    def factor(self, it: int) -> float:
        if it < self.warmup:
            return 0.1 + 0.9 * it / self.warmup
        p = min(1.0, (it - self.warmup) / max(self.total - self.warmup, 1))
        if self.kind == "cosine":
            return self.lrf + (1 - self.lrf) * 0.5 * (1 + math.cos(math.pi * p))
        return 1 - (1 - self.lrf) * p

    def step(self, it: int) -> float:
        self.it = it
        f = self.factor(it)
        for g in self.opt.param_groups:
            g["lr"] = g["initial_lr"] * f
        return self.opt.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"it": self.it, "total": self.total, "warmup": self.warmup, "lrf": self.lrf, "kind": self.kind}

    def load_state_dict(self, d: dict):
        self.it = int(d["it"])


def build_optimizer(model, name: str, lr0: float | None, momentum: float, weight_decay: float, iterations: int):
    """SGD / Adam / AdamW; ``auto`` picks AdamW (lr 1e-3) for short runs and SGD (lr 0.01) beyond 10k steps.
    Biases and normalisation weights get no weight decay."""
    import torch

    name = {o.lower(): o for o in OPTIMIZERS}.get(str(name).lower(), name)
    if name not in OPTIMIZERS:
        from yolo_export.utils import nearest

        g = nearest(name, OPTIMIZERS)
        raise ArgumentError(f"unknown optimizer '{name}'{f'; did you mean {g!r}?' if g else ''} "
                            f"(choose {', '.join(OPTIMIZERS)})")
    if name == "auto":
        name = "AdamW" if iterations < 10_000 else "SGD"
    if lr0 is None:
        lr0 = 0.01 if name == "SGD" else 0.001
    decay, no_decay = [], []
    for _, m in unwrap(model).named_modules():
        for pname, p in m.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            (no_decay if pname == "bias" or isinstance(m, torch.nn.BatchNorm2d) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "SGD":
        opt = torch.optim.SGD(groups, lr=lr0, momentum=momentum, nesterov=True)
    elif name == "Adam":
        opt = torch.optim.Adam(groups, lr=lr0, betas=(momentum, 0.999))
    else:
        opt = torch.optim.AdamW(groups, lr=lr0, betas=(momentum, 0.999))
    return opt, name, lr0


def _rng_state() -> dict:
    import torch

    st = np.random.get_state()
    out = {"torch": torch.get_rng_state(), "numpy": [st[0], torch.from_numpy(st[1].astype(np.int64)), int(st[2]),
                                                     int(st[3]), float(st[4])],
           "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}
    if torch.cuda.is_available():
        out["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return out


def _set_rng_state(st: dict) -> None:
    import torch

    if not st:
        return
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = st["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if st.get("cuda") and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])


def _tuples(opt_sd: dict) -> dict:
    """Checkpoints keep lists; optimizers expect ``betas`` as a tuple."""
    for g in opt_sd.get("param_groups", []):
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    return opt_sd


def increment_dir(project: Path, name: str, exist_ok: bool) -> Path:
    d = project / name
    if exist_ok or not d.exists():
        return d
    i = 2
    while (project / f"{name}{i}").exists():
        i += 1
    return project / f"{name}{i}"


def find_last(project: Path) -> Path:
    runs = sorted(project.glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise CheckpointError(f"nothing to resume: no */weights/last.pt under {project} (pass --resume PATH)")
    return runs[-1]


class _Dist:
    """Process-group facts for DDP runs launched by torchrun (WORLD_SIZE/RANK/LOCAL_RANK in the environment)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.dist = None

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def init(self, device):
        if not self.enabled:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
        self.dist = dist

    def barrier(self):
        if self.dist is not None:
            self.dist.barrier()

    def broadcast(self, obj):
        if self.dist is None:
            return obj
        lst = [obj]
        self.dist.broadcast_object_list(lst, src=0)
        return lst[0]

    def mean(self, value: float) -> float:
        if self.dist is None:
            return value
        import torch

        t = torch.tensor([value], dtype=torch.float64)
        self.dist.all_reduce(t)
        return float(t.item() / self.world)

    def sync_buffers(self, module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics): each rank updates its own from its shard, and
        the weights that get saved are rank 0's, so validation on all ranks must use exactly those."""
        if self.dist is None:
            return
        for b in module.buffers():
            self.dist.broadcast(b.data, src=0)

    def close(self):
        if self.dist is not None and self.dist.is_initialized():
            self.dist.destroy_process_group()
        self.dist = None


# ----------------------------------------------------------------------------------------- trainer
class Trainer:
    """``Trainer(yolo, data="digits", epochs=20, imgsz=32).train()`` -> final validation metrics of best.pt."""

    def __init__(self, yolo, **kwargs):
        unknown = sorted(set(kwargs) - set(DEFAULTS) - {"model"})
        if unknown:
            from yolo_export.utils import nearest

            hints = [f"{u} (did you mean {nearest(u, DEFAULTS)}?)" if nearest(u, DEFAULTS) else u for u in unknown]
            raise ArgumentError(f"unknown training argument(s): {', '.join(hints)}")
        self.model_arg = kwargs.pop("model", None)  # what the user named with --model (checked against --resume)
        self.yolo = yolo
        self.given = {k: v for k, v in kwargs.items() if v is not None}
        self.args = {**DEFAULTS, **self.given}
        self.ddp = _Dist()
        self.resume_ckpt = None
        resume = self.args.get("resume")
        if resume:
            self._prepare_resume(resume)
        if str(self.args["optimizer"]).lower() not in {o.lower() for o in OPTIMIZERS}:
            build_optimizer(None, self.args["optimizer"], None, 0, 0, 0)  # raises with a suggestion

    # ---------------------------------------------------------------- resume
    def _prepare_resume(self, resume):
        from yolo_export.nn.checkpoint import load_checkpoint

        if resume is True or str(resume).lower() in ("true", "auto", "1"):
            if self.yolo.ckpt_path and Path(self.yolo.ckpt_path).name == "last.pt":
                path = Path(self.yolo.ckpt_path)
            else:
                path = find_last(Path(self.args["project"]))
        else:
            path = Path(resume)
        ck = load_checkpoint(path)
        st = ck.get("train_state")
        if ck.get("finished"):
            raise CheckpointError(f"{path}: that run finished all {ck['train_args']['epochs']} epochs; nothing to "
                                  f"resume (start a new run from its weights with --pretrained {path})")
        if not st:
            raise CheckpointError(f"{path} holds no training state to resume (it is a final or exported checkpoint); "
                                  f"start a new run with --model {path}")
        if st.get("finished"):
            raise CheckpointError(f"{path}: that run finished all {ck['train_args']['epochs']} epochs; nothing to "
                                  f"resume (start a new run with --model {path})")
        self._refuse_contradictions(ck, path)
        keep = {k: self.given[k] for k in RESUME_FREE if k in self.given}
        self.args = {**DEFAULTS, **ck["train_args"], **keep, "resume": str(path)}
        self.resume_ckpt = ck
        self.resume_path = path

    def _refuse_contradictions(self, ck: dict, path: Path) -> None:
        """``--resume`` continues a run with its own arguments: any given argument that differs is refused."""
        was = ck.get("train_args") or {}
        new_run = f"start a new run from its weights with --pretrained {path}"
        for k, v in self.given.items():
            if k in RESUME_FREE or k in RESUME_IGNORED or k not in was or _same(v, was[k]):
                continue
            flag = "--" + k.replace("_", "-")
            if k == "epochs":
                raise ArgumentError(f"--resume continues {path} to its {was[k]} epochs; --epochs {v} contradicts it "
                                    f"(to train longer, let it finish, then {new_run} --epochs N)")
            raise ArgumentError(f"--resume continues {path} with its own arguments; {flag} {v} contradicts its "
                                f"{k} {was[k]} (drop {flag}, or {new_run})")
        if self.model_arg is not None and self.yolo.model is not None:
            mine, theirs = self.yolo.model.yaml.get("scale"), (ck.get("yaml") or {}).get("scale")
            if mine != theirs:
                raise ArgumentError(f"--resume continues {path}, a yolov8{theirs}-cls model; --model {self.model_arg} "
                                    f"(yolov8{mine}-cls) contradicts it (drop --model, or {new_run})")

    # ---------------------------------------------------------------- setup
    def _setup(self):
        """Everything a run needs, in order: device and processes, seeds, data, model, loaders, optimisation, the
        state of a resumed run (or a new run folder), the DDP wrapper and the weights folder."""
        self._setup_device()
        self._seed()
        self.root = self._resolve_data()
        model = self._build_model()
        self._setup_loaders()
        self._setup_optimisation(model)
        if self.resume_ckpt is not None:
            self._restore_state()
        else:
            self.save_dir = self._new_run_folder()
        self._setup_run(model)

    def _setup_device(self):
        """The device (this rank's GPU under DDP), the process group, and the thread / loader-worker split."""
        import torch

        from yolo_export.device import select_device

        a = self.args
        self.device = select_device(a["device"])
        if self.ddp.enabled and self.device.type == "cuda":
            self.device = torch.device(f"cuda:{self.ddp.local_rank}")
            torch.cuda.set_device(self.device)
        self.ddp.init(self.device)
        if self.device.type == "cpu":
            from yolo_export.threads import train_split

            local = int(os.environ.get("LOCAL_WORLD_SIZE", self.ddp.world))
            self.threads, a["workers"] = train_split(a["threads"], a["workers"], local)
        else:
            from yolo_export.threads import apply_torch, loader_workers, resolve

            self.threads = apply_torch(resolve(a["threads"]))
            a["workers"] = loader_workers(a["workers"], 1)

    def _seed(self):
        import torch

        seed = int(self.args["seed"]) + self.ddp.rank
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if self.args["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    def _resolve_data(self) -> Path:
        """The dataset root; rank 0 materialises ``digits`` first, the others then reuse it."""
        from yolo_export.data.datasets import resolve_dataset

        if self.ddp.main:
            root = resolve_dataset(self.args["data"])
        self.ddp.barrier()
        if not self.ddp.main:
            root = resolve_dataset(self.args["data"])
        return root

    def _build_model(self):
        """The model to train (from the resumed checkpoint, the YAML or the loaded weights), on the device; sets
        ``self.names`` and ``self.pp`` (its preprocessing)."""
        if self.resume_ckpt is not None:
            from yolo_export.nn.checkpoint import build_from_checkpoint

            ck = dict(self.resume_ckpt)
            ck["state_dict"] = ck["train_state"]["model"]
            model = build_from_checkpoint(ck)
            names = [model.names[i] for i in sorted(model.names)]
            pp = ck["preprocess"]
        else:
            model, names, pp = self._new_model()
        self.names, self.pp = names, pp
        model.imgsz, model.preprocess = int(pp["crop"]), pp
        model = model.float().to(self.device).train()
        if model.is_fused():
            LOGGER.warning("warning: the model is fused (no BatchNorm layers); training it anyway")
        return model

    def _new_model(self):
        """(model, class names, preprocessing) for a new run: the facade's model fitted to the dataset's classes."""
        import torch

        from yolo_export.data.datasets import class_names
        from yolo_export.data.transforms import default_preprocess, with_imgsz
        from yolo_export.nn.model import ClassificationModel

        a, y = self.args, self.yolo
        if y.model is None:
            raise ArgumentError(f"training needs a PyTorch model (.yaml or .pt); {y.ckpt_path} is an exported "
                                f"{y.format} model")
        torch.manual_seed(int(a["seed"]))  # the same initial weights on every rank
        names = class_names(self.root)
        if y.ckpt is None:  # a YAML: a fresh model for these classes
            model = ClassificationModel(copy.deepcopy(y.model.yaml), nc=len(names), names=names,
                                        dropout=float(a["dropout"]))
        else:
            model = copy.deepcopy(y.model)
            if [model.names[i] for i in sorted(model.names)] != names:
                LOGGER.info(f"new class list ({len(names)} classes): the classifier layer is reinitialised")
                model.reset_classes(names)
            if a["dropout"]:
                model.set_attrs(dropout=float(a["dropout"]))
        if a["pretrained"] and not isinstance(a["pretrained"], bool):
            self._transfer(model, a["pretrained"])
        imgsz = int(a["imgsz"] or getattr(y.model, "imgsz", 224) or 224)
        pp = with_imgsz(y.preprocess, imgsz) if y.preprocess else default_preprocess(imgsz)
        a["imgsz"] = imgsz
        return model, names, pp

    def _setup_loaders(self):
        """Augmentation (the dataset's preset, overridden by what the user set), datasets, samplers, loaders."""
        from yolo_export.data.augment import AUG_KEYS, EvalTransform, TrainTransform, aug_preset
        from yolo_export.data.datasets import ClassificationDataset, EpochSampler
        from yolo_export.engine.validator import make_loader

        a, names, pp, seed = self.args, self.names, self.pp, int(self.args["seed"])
        aug = aug_preset(a["data"])
        for k in AUG_KEYS:
            if a.get(k) is not None:
                aug[k] = a[k]
        self.aug = aug
        world = self.ddp.world
        if int(a["batch"]) < world:
            raise ArgumentError(f"--batch {a['batch']} is smaller than the number of processes ({world})")
        self.batch_local = int(a["batch"]) // world
        self.train_ds = ClassificationDataset(self.root, "train", TrainTransform(pp, **aug), names=names,
                                              fraction=a["fraction"], seed=seed, cache=bool(a["cache"]))
        self.val_ds = ClassificationDataset(self.root, "val", EvalTransform(pp), names=names) if a["val"] else None
        pin = self.device.type == "cuda"
        self.train_sampler = EpochSampler(len(self.train_ds), shuffle=True, seed=seed, rank=self.ddp.rank,
                                          world=world)
        self.train_loader = make_loader(self.train_ds, self.batch_local, a["workers"], self.train_sampler, pin)
        if self.val_ds is not None:
            vs = EpochSampler(len(self.val_ds), shuffle=False, rank=self.ddp.rank, world=world)
            self.val_loader = make_loader(self.val_ds, max(self.batch_local, 32), a["workers"], vs, pin)

    def _setup_optimisation(self, model):
        """Optimizer, LR schedule, EMA, AMP scaler, loss, and the counters of a new run."""
        import torch

        a = self.args
        self.nb = len(self.train_loader)
        epochs = int(a["epochs"])
        if epochs < 1:
            raise ArgumentError(f"--epochs must be at least 1 (got {epochs})")
        self.optimizer, opt_name, lr0 = build_optimizer(model, a["optimizer"], a["lr0"], float(a["momentum"]),
                                                        float(a["weight_decay"]), self.nb * epochs)
        self.opt_name, self.lr0 = opt_name, lr0
        warmup = int(round(float(a["warmup_epochs"]) * self.nb))
        self.sched = LRSchedule(self.optimizer, self.nb * epochs, warmup, float(a["lrf"]), a["scheduler"])
        self.ema = ModelEMA(model, float(a["ema_decay"]), float(a["ema_tau"])) if a["ema"] else None
        self.amp = bool(a["amp"]) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=float(a["label_smoothing"]))
        self.start_epoch, self.best_fitness, self.best_epoch, self.history = 0, None, -1, []
        self.skipped_total = 0

    def _restore_state(self):
        """Continue the resumed run: optimizer, schedule, EMA, scaler, counters, RNG, and its own run folder."""
        import torch

        ck = self.resume_ckpt
        st = ck["train_state"]
        self.optimizer.load_state_dict(_tuples(st["optimizer"]))
        self.sched.load_state_dict(st["scheduler"])
        if self.ema is not None and st.get("ema") is not None:
            self.ema.ema.load_state_dict(st["ema"])
            self.ema.updates = int(st["ema_updates"])
        if self.amp and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.start_epoch = int(ck["epoch"]) + 1
        self.best_fitness = ck.get("best_fitness")
        self.best_epoch = int(ck.get("best_epoch", -1))
        self.history = list(ck.get("history") or [])
        self.skipped_total = int(st.get("skipped", 0))
        if self.ddp.main:
            _set_rng_state(st.get("rng"))
        else:
            torch.manual_seed(int(self.args["seed"]) + 1000 * self.ddp.rank + self.start_epoch)
        self.save_dir = Path(self.resume_path).parent.parent
        LOGGER.info(f"resuming {self.resume_path} from epoch {self.start_epoch + 1}/{int(self.args['epochs'])}")

    def _new_run_folder(self) -> Path:
        """``project/name`` (numbered when it exists), chosen by rank 0 and shared with the other ranks."""
        a = self.args
        save_dir = None
        if self.ddp.main:
            save_dir = str(increment_dir(Path(a["project"]), str(a["name"]), bool(a["exist_ok"])))
        return Path(self.ddp.broadcast(save_dir))

    def _setup_run(self, model):
        """The DDP wrapper, the checkpoint paths; rank 0 makes the weights folder and writes ``args.yaml``."""
        self.model = model
        if self.ddp.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.wdir = self.save_dir / "weights"
        self.last, self.best = self.wdir / "last.pt", self.wdir / "best.pt"
        if self.ddp.main:
            self.wdir.mkdir(parents=True, exist_ok=True)
            for f in (self.last, self.best):  # temp files of a checkpoint write that a kill interrupted
                clean_stale(f)
            self._write_args()

    def _transfer(self, model, src) -> int:
        from yolo_export.nn.checkpoint import checkpoint_attrs, load_checkpoint

        ck = load_checkpoint(src)
        theirs = ck["state_dict"]
        ours = model.state_dict()
        take = {k: v for k, v in theirs.items() if k in ours and ours[k].shape == v.shape}
        model.load_state_dict(take, strict=False)
        attrs = checkpoint_attrs(ck)  # BatchNorm eps/momentum etc. travel with the weights they were trained with
        if "dropout" in self.given:
            attrs.pop("dropout")
        model.set_attrs(**attrs)
        origin = " (Ultralytics format)" if ck.get("source") == "ultralytics" else ""
        LOGGER.info(f"pretrained: transferred {len(take)}/{len(ours)} tensors from {src}{origin}")
        self.transferred = (len(take), len(ours))
        return len(take)

    # ---------------------------------------------------------------- files
    def _plain_args(self) -> dict:
        a = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.args.items()}
        a.update(optimizer_used=self.opt_name, lr0_used=self.lr0, world_size=self.ddp.world,
                 augment={k: (list(v) if isinstance(v, tuple) else v) for k, v in self.aug.items()})
        return a

    def _write_args(self):
        import yaml

        from yolo_export.utils import atomic_write_bytes

        text = yaml.safe_dump({k: (str(v) if isinstance(v, Path) else v) for k, v in self._plain_args().items()},
                              sort_keys=False)
        atomic_write_bytes(self.save_dir / "args.yaml", text.encode())

    def _write_csv(self):
        from yolo_export.utils import atomic_write_bytes

        if not self.history:
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(self.history[0]))
        w.writeheader()
        w.writerows(self.history)
        atomic_write_bytes(self.save_dir / "results.csv", buf.getvalue().encode())

    def _save(self, epoch: int, metrics: dict, is_best: bool, finished: bool = False):
        import torch

        from yolo_export.nn.checkpoint import save_checkpoint

        raw = unwrap(self.model)
        ema_model = self.ema.ema if self.ema is not None else raw
        base = {"epoch": epoch, "best_fitness": self.best_fitness, "best_epoch": self.best_epoch,
                "train_args": self._plain_args(), "metrics": _scalar_metrics(metrics), "history": self.history}
        state = {
            "model": {k: v.detach().float().cpu().clone() if v.is_floating_point() else v.cpu().clone()
                      for k, v in raw.state_dict().items()},
            "ema": ({k: v.detach().float().cpu().clone() if v.is_floating_point() else v.cpu().clone()
                     for k, v in self.ema.ema.state_dict().items()} if self.ema is not None else None),
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict() if self.amp else None,
            "rng": _rng_state(),
            "skipped": self.skipped_total,
            "finished": finished,
            "torch": str(torch.__version__),
        }
        # best.pt first: a kill between the two writes then leaves a last.pt whose best epoch has its best.pt
        if is_best:
            save_checkpoint(self.best, ema_model, half=True, preprocess=self.pp, extra=base)
        # a finished run's last.pt keeps what can still be used (its weights and history): resuming it is refused,
        # and extending it is a new run with --pretrained, so the optimizer and RNG state would be dead weight
        steps = sorted({int(v["step"]) for v in state["optimizer"]["state"].values() if "step" in v})
        summary = {"scheduler_it": int(self.sched.it),
                   "ema_updates": state["ema_updates"], "optimizer_steps": steps, "skipped": self.skipped_total}
        extra = {**base, "finished": True, "train_summary": summary} if finished else {**base, "train_state": state}
        save_checkpoint(self.last, ema_model, half=True, preprocess=self.pp, extra=extra)

    # ---------------------------------------------------------------- loop
    def _validate(self, model, desc="val"):
        import torch

        from yolo_export.engine.validator import evaluate, summarise

        model.eval()
        dev = self.device

        def predict(x):
            with torch.inference_mode():
                return model(x.to(dev, non_blocking=True))

        counts = evaluate(predict, self.val_loader, len(self.names), dist=self.ddp.dist,
                          progress=bool(self.args["progress"]) and self.ddp.main, desc=desc)
        return summarise(counts, self.names)

    def _as_saved(self, model):
        """The model exactly as the checkpoint will hold it (rank 0's buffers, weights rounded to fp16), so that the
        reported metrics, and the best/patience decisions taken on them, are those of the saved weights."""
        import torch

        self.ddp.sync_buffers(model)
        saved = copy.deepcopy(model)
        with torch.no_grad():
            for t in saved.state_dict().values():
                if t.is_floating_point():
                    t.copy_(t.half().float())
        return saved

    def train(self) -> dict:
        from yolo_export.utils import sigterm_as_interrupt

        self.epoch = None
        try:
            with sigterm_as_interrupt():  # SIGTERM ends the run as Ctrl-C does
                return self._train()
        except KeyboardInterrupt:
            raise Interrupted(self._interrupted_line()) from None
        finally:
            self.ddp.close()

    def _interrupted_line(self) -> str:
        """Which epoch is saved and the command that continues the run."""
        last = getattr(self, "last", None)
        where = f"during epoch {self.epoch + 1}" if self.epoch is not None else "before the first epoch"
        if last is None or not Path(last).exists():
            return f"interrupted {where}; no epoch was saved yet (start the run again)"
        from yolo_export.nn.checkpoint import load_checkpoint

        try:
            done = int(load_checkpoint(last)["epoch"]) + 1
        except Exception:  # noqa: BLE001 - the line must come out whatever the file holds
            return f"interrupted {where}; resume with: yexport train --resume {last}"
        return (f"interrupted {where}; {last} holds epoch {done}/{self.args['epochs']}; resume with: "
                f"yexport train --resume {last}")

    def _train(self):
        t_start = time.perf_counter()
        self._setup()
        if self.ddp.main and self.start_epoch == 0:
            LOGGER.info(self._start_line())
        self.data_wait = self.step_time = 0.0
        self.images_seen = 0
        stopped_early = False
        for epoch in range(self.start_epoch, int(self.args["epochs"])):
            self.epoch = epoch
            t_ep = time.perf_counter()
            loss_sum, n_seen, batches = self._train_epoch(epoch, t_ep)
            if self._end_epoch(epoch, t_ep, loss_sum, n_seen, batches):
                stopped_early = True
                break
        self.ddp.barrier()
        return self._finish(t_start, stopped_early)

    def _start_line(self) -> str:
        a = self.args
        return (f"training {self.yolo.model_name or 'model'} on {a['data']} ({len(self.train_ds)} train / "
                f"{len(self.val_ds) if self.val_ds is not None else 0} val images, {len(self.names)} classes) for "
                f"{int(a['epochs'])} epochs at imgsz {self.pp['crop']}, batch {a['batch']}"
                f"{f' ({self.ddp.world} processes)' if self.ddp.enabled else ''}, {self.opt_name} lr0 {self.lr0:g}, "
                f"device {self.device}; results in {self.save_dir}")

    def _train_epoch(self, epoch: int, t_ep: float):
        """One pass over the training data: (summed loss, images counted, the pass's :class:`Batches`)."""
        from tqdm import tqdm

        from yolo_export.data.datasets import Batches

        main = self.ddp.main
        self.model.train()
        self.train_sampler.set_epoch(epoch)
        bar = tqdm(total=self.nb, desc=f"epoch {epoch + 1}/{int(self.args['epochs'])}",
                   disable=not (main and self.args["progress"]), mininterval=0.5, dynamic_ncols=True, file=sys.stderr)
        loss_sum, n_seen = 0.0, 0
        batches = Batches(self.train_loader, limit=self.nb, on_bad=_warn_corrupt)
        for i, (x, y, _) in enumerate(batches):
            t1 = time.perf_counter()
            lr = self.sched.step(epoch * self.nb + i)
            if x is None and not self.ddp.enabled:
                continue
            loss, n = self._step(x, y)
            loss_sum, n_seen = loss_sum + loss, n_seen + n
            t2 = time.perf_counter()
            self.step_time += batches.last_wait + (t2 - t1)
            if main:
                ips = n_seen * self.ddp.world / max(t2 - t_ep, 1e-9)
                bar.set_postfix_str(f"loss {loss_sum / max(n_seen, 1):.4f} lr {lr:.2e} {ips:.0f} img/s", refresh=False)
                bar.update(1)
        bar.close()
        return loss_sum, n_seen, batches

    def _step(self, x, y) -> tuple[float, int]:
        """One optimisation step on a batch: (summed loss, images) to count. ``x is None`` (none of this rank's
        images could be decoded, under DDP): every rank must take part in each step, so this one runs a
        zero-weighted step on a blank image and counts nothing."""
        import torch

        weight = 1.0
        if x is None:
            x = torch.zeros(1, 3, self.pp["crop"], self.pp["crop"])
            y = torch.zeros(1, dtype=torch.long)
            weight = 0.0
        if len(x) == 1:  # BatchNorm cannot train on one sample (a last batch of 1): use it twice
            x, y = x.repeat(2, 1, 1, 1), y.repeat(2)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with torch.autocast("cuda", enabled=self.amp):
            loss = self.criterion(self.model(x), y) * weight
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.args["clip_grad"]:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.args["clip_grad"]))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        return (float(loss.detach()) * len(y), len(y)) if weight else (0.0, 0)

    def _end_epoch(self, epoch: int, t_ep: float, loss_sum: float, n_seen: int, batches) -> bool:
        """Validate, record, save and report the epoch; True when the run stops early after it."""
        a, main, epochs = self.args, self.ddp.main, int(self.args["epochs"])
        self.data_wait += batches.wait
        self.images_seen += n_seen
        train_time = time.perf_counter() - t_ep
        train_loss = self.ddp.mean(loss_sum / max(n_seen, 1))
        skipped = int(round(self.ddp.mean(float(batches.skipped)) * self.ddp.world))
        self.skipped_total += skipped
        eval_model = self._as_saved(self.ema.ema if self.ema is not None else unwrap(self.model))
        metrics = self._validate(eval_model) if self.val_ds is not None else {"top1": None, "top5": None,
                                                                               "loss": None, "fitness": -train_loss}
        is_best = self.best_fitness is None or metrics["fitness"] > self.best_fitness
        if is_best:
            self.best_fitness, self.best_epoch = metrics["fitness"], epoch
        row = {"epoch": epoch + 1, "train/loss": round(train_loss, 5),
               "val/loss": None if metrics.get("loss") is None else round(metrics["loss"], 5),
               "metrics/top1": None if metrics.get("top1") is None else round(metrics["top1"], 5),
               "metrics/top5": None if metrics.get("top5") is None else round(metrics["top5"], 5),
               "lr": round(self.optimizer.param_groups[0]["lr"], 8),
               "time_s": round(time.perf_counter() - t_ep, 2),
               "img_per_s": round(n_seen * self.ddp.world / max(train_time, 1e-9), 1),
               "data_wait": round(batches.wait / max(train_time, 1e-9), 3), "skipped": skipped}
        self.history.append(row)
        stop = a["patience"] and epoch - self.best_epoch >= int(a["patience"])
        if main:
            self._save(epoch, metrics, is_best, finished=epoch + 1 == epochs or bool(stop))
            self._write_csv()
            LOGGER.info(self._epoch_line(row, train_loss, metrics))
        if stop and epoch + 1 < epochs:
            if main:
                LOGGER.info(f"early stop: no improvement for {a['patience']} epochs (best: epoch "
                            f"{self.best_epoch + 1})")
            return True
        return False

    def _epoch_line(self, row: dict, train_loss: float, metrics: dict) -> str:
        return (f"epoch {row['epoch']}/{int(self.args['epochs'])}: train loss {train_loss:.4f}"
                + (f"  val loss {metrics['loss']:.4f}  top1 {metrics['top1']:.4f}  "
                   f"top5 {metrics['top5']:.4f}" if self.val_ds is not None else "")
                + f"  {row['img_per_s']:.0f} img/s  {row['time_s']:.1f}s"
                + (f"  ({row['skipped']} corrupt image(s) skipped)" if row["skipped"] else ""))

    def _finish(self, t_start: float, stopped_early: bool) -> dict:
        from yolo_export.nn.checkpoint import build_from_checkpoint, load_checkpoint

        a = self.args
        main = self.ddp.main
        if not self.best.exists():
            raise YoloExportError(f"training ended without a checkpoint in {self.wdir}")
        ck = load_checkpoint(self.best)
        best = build_from_checkpoint(ck).to(self.device)
        final = {}
        if self.val_ds is not None:
            final = self._validate(best, desc="val best.pt")
        wall = time.perf_counter() - t_start
        out = {
            "top1": final.get("top1"), "top5": final.get("top5"), "loss": final.get("loss"),
            "fitness": final.get("fitness"), "per_class": final.get("per_class"),
            "confusion_matrix": final.get("confusion_matrix"), "names": self.names,
            "best_epoch": self.best_epoch + 1, "epochs_run": len(self.history), "epochs": int(a["epochs"]),
            "stopped_early": stopped_early, "save_dir": str(self.save_dir), "best": str(self.best),
            "last": str(self.last), "time_s": round(wall, 2), "skipped_images": self.skipped_total,
            "world_size": self.ddp.world, "images_per_s": round(self.images_seen * self.ddp.world /
                                                                max(self.step_time, 1e-9), 1),
            "data_wait_share": round(self.data_wait / max(self.step_time, 1e-9), 3),
            "speed": final.get("speed"), "threads": self.threads, "workers": int(a["workers"]),
        }
        if main and a["plots"]:
            from yolo_export.engine.plots import plot_confusion_matrix, plot_results

            try:
                plot_results(self.history, self.save_dir / "results.png")
                if final.get("confusion_matrix"):
                    plot_confusion_matrix(final["confusion_matrix"], self.names,
                                          self.save_dir / "confusion_matrix.png")
            except Exception as e:  # noqa: BLE001 - a plotting problem must not lose a finished run
                LOGGER.warning(f"warning: plots not written: {e}")
        if main:
            LOGGER.info(self.summary(out))
        self.yolo.adopt(best.cpu().eval(), ck, self.best)  # the facade now holds the best weights
        return out

    def summary(self, out: dict) -> str:
        lines = [f"{'epoch':>5} {'train loss':>10} {'val loss':>9} {'top1':>7} {'top5':>7} {'img/s':>7} {'time':>6}"]
        for r in self.history:
            def f(v, fmt):
                return format(v, fmt) if v is not None else "-"
            lines.append(f"{r['epoch']:>5} {f(r['train/loss'], '10.4f')} {f(r['val/loss'], '9.4f')} "
                         f"{f(r['metrics/top1'], '7.4f')} {f(r['metrics/top5'], '7.4f')} {r['img_per_s']:>7.0f} "
                         f"{r['time_s']:>5.1f}s")
        if out.get("top1") is not None:
            lines.append(f"best.pt (epoch {out['best_epoch']}): top1 {out['top1']:.4f}  top5 {out['top5']:.4f} on "
                         f"{self.args['data']} val")
        lines.append(f"{out['epochs_run']} epoch(s) in {out['time_s']:.1f}s"
                     + (f"; {out['skipped_images']} corrupt image(s) skipped" if out["skipped_images"] else "")
                     + f"; results in {self.save_dir}")
        return "\n".join(lines)


# arguments a resumed run may change: where and how it runs, not what it trains
RESUME_FREE = ("device", "workers", "progress", "plots", "threads")
# ignored by a resumed run: it continues in its own folder
RESUME_IGNORED = ("resume", "project", "name", "exist_ok")


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if a == b or str(a) == str(b):
        return True
    return isinstance(a, str) and isinstance(b, str) and Path(a).exists() and Path(a).resolve() == Path(b).resolve()


def _warn_corrupt(path: str, why: str) -> None:
    LOGGER.warning(f"warning: skipped a corrupt image during training: {why}")


def _scalar_metrics(m: dict) -> dict:
    return {k: v for k, v in (m or {}).items() if isinstance(v, (int, float, str)) or v is None}

