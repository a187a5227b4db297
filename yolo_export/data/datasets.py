"""Classification datasets: the ImageFolder layout, and the built-in ``digits`` dataset.

ImageFolder layout::

    root/train/<class>/*.jpg     required
    root/val/<class>/*.jpg       required for validation (``test/`` is used when there is no ``val/``)
    root/test/<class>/*.jpg      optional

Class names are the folder names of ``train/`` (or of the only split there is), sorted; class index ``i`` is the
``i``-th name. A split may lack a class (it then has no samples of it) but may not add one. A class folder with
no readable image file is an error; a file that is not an image (by suffix) is skipped with a warning naming it.
An image file that turns out to be corrupt when it is decoded is skipped and counted (see ``collate``).

``digits``: scikit-learn's handwritten digits (1,797 real 8x8 greyscale images, 10 classes, bundled with
scikit-learn, so nothing is downloaded). It is written once, as 8x8 PNGs, to
``<cache dir>/datasets/digits/{train,val}/{0..9}/NNNN.png`` and reused after. The split is fixed: sample ``i`` (in
``load_digits()`` order) goes to ``val`` when ``i % 5 == 4`` and to ``train`` otherwise, which gives 1,438 train and
359 val images with every class in both (a 20 % split, stratified in effect because the classes are interleaved).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from yolo_export.data.transforms import IMG_SUFFIXES
from yolo_export.errors import DatasetError, DatasetNotFound, ImageError
from yolo_export.utils import LOGGER, cache_dir

BUILTIN = ("digits",)
DIGITS_VERSION = "1"         # bump when the materialised layout or split changes
SPLITS = ("train", "val", "test")
_IGNORED = {".ds_store", "thumbs.db", "desktop.ini", ".gitkeep"}


# --------------------------------------------------------------------------------------------- resolve
def resolve_dataset(data) -> Path:
    """``'digits'`` -> the materialised built-in dataset; anything else -> a checked ImageFolder root."""
    if data is None or str(data).strip() == "":
        raise DatasetError("no dataset given (use --data digits or --data path/to/imagefolder)")
    s = str(data)
    if s.lower() in BUILTIN and not Path(s).exists():
        return materialise_digits()
    root = Path(s).expanduser()
    if not root.exists():
        raise DatasetNotFound(f"dataset not found: {s} (use 'digits' or an ImageFolder root with train/<class>/*.jpg)")
    if not root.is_dir():
        raise DatasetError(f"dataset {s} is a file; an ImageFolder dataset is a directory with train/ and val/")
    if not any((root / sp).is_dir() for sp in SPLITS):
        subdirs = sorted(p.name for p in root.iterdir() if p.is_dir())[:5]
        raise DatasetError(f"dataset {root} has no train/, val/ or test/ split folder"
                           + (f" (found {', '.join(subdirs)}; expected root/train/<class>/*.jpg)" if subdirs else ""))
    return root


def digits_dir() -> Path:
    return cache_dir() / "datasets" / "digits"


def materialise_digits() -> Path:
    """Write scikit-learn's digits as an ImageFolder once (built in a temp dir, then renamed into place)."""
    final = digits_dir()
    stamp = final / ".complete"
    if stamp.exists() and stamp.read_text().strip() == DIGITS_VERSION:
        return final
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a core dependency
        raise DatasetError("the built-in 'digits' dataset needs scikit-learn: pip install scikit-learn") from None
    from PIL import Image

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".digits.tmp-", dir=final.parent))
    try:
        d = load_digits()
        imgs = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        for i, (img, label) in enumerate(zip(imgs, d.target)):
            split = "val" if i % 5 == 4 else "train"
            out = tmp / split / str(int(label))
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, "L").save(out / f"{i:04d}.png")
        (tmp / "README.txt").write_text(
            "scikit-learn's handwritten digits (sklearn.datasets.load_digits): 1,797 8x8 greyscale images, "
            "10 classes.\nSplit: sample i goes to val/ when i % 5 == 4, else train/.\n")
        (tmp / ".complete").write_text(DIGITS_VERSION)
        if stamp.exists() and stamp.read_text().strip() == DIGITS_VERSION:
            return final  # another process (a second DDP rank, a test worker) finished first: never replace its copy
        if final.exists():  # an old or incomplete copy: replace it as a whole
            old = final.with_name(f".digits.old-{os.getpid()}")
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            # another process (e.g. a second DDP rank) finished first: use its copy
            if not (stamp.exists() and stamp.read_text().strip() == DIGITS_VERSION):
                raise
        else:
            LOGGER.info(f"built-in dataset 'digits' written to {final} ({len(imgs)} images)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------------- scanning
def class_names(root: Path) -> list[str]:
    """Folder names of the train split (or the first split present), sorted."""
    root = Path(root)
    for sp in SPLITS:
        d = root / sp
        if d.is_dir():
            names = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            if not names:
                raise DatasetError(f"{d} has no class folders (expected {d}/<class>/*.jpg)")
            if sp != "train" and not (root / "train").is_dir():
                LOGGER.debug(f"dataset {root} has no train/ split; class names taken from {sp}/")
            return names
    raise DatasetError(f"dataset {root} has no train/, val/ or test/ split folder")


def split_dir(root: Path, split: str) -> Path:
    """The folder of ``split`` (see :func:`resolve_split`)."""
    return Path(root) / resolve_split(root, split)


def resolve_split(root: Path, split: str) -> str:
    """The split that ``split`` reads: itself, else ``val`` falls back to ``test`` (and the reverse) with a warning,
    as the reference package does. Results name the split returned here, the one scored."""
    root = Path(root)
    if split not in SPLITS:
        raise DatasetError(f"unknown split '{split}' (use train, val or test)")
    d = root / split
    if d.is_dir():
        return split
    alt = {"val": "test", "test": "val"}.get(split)
    if alt and (root / alt).is_dir():
        LOGGER.warning(f"dataset {root} has no '{split}' split; using '{alt}' instead")
        return alt
    have = [s for s in SPLITS if (root / s).is_dir()]
    raise DatasetError(f"dataset {root} has no '{split}' split (expected {d}/<class>/*.jpg; "
                       f"found: {', '.join(have) or 'none'})")


def scan_split(root: Path, split: str, names: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """``[(path, class_index), ...]`` of a split, and the class names. Checks the layout; warns on skipped files."""
    root = Path(root)
    names = names or class_names(root)
    d = split_dir(root, split)
    present = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    extra = [c for c in present if c not in names]
    if extra:
        raise DatasetError(f"{d} has class folder(s) {', '.join(extra[:5])} that {root}/train does not have")
    stray = sorted(p.name for p in d.iterdir() if p.is_file() and p.name.lower() not in _IGNORED)
    if stray:
        LOGGER.warning(f"warning: {d}: skipped {len(stray)} file(s) outside class folders: {', '.join(stray[:5])}"
                       + (" ..." if len(stray) > 5 else ""))
    samples, skipped, empty = [], [], []
    for ci, c in enumerate(names):
        cd = d / c
        if not cd.is_dir():
            continue
        files = sorted(p for p in cd.rglob("*") if p.is_file() and not p.name.startswith("."))
        n0 = len(samples)
        for p in files:
            if p.suffix.lower() in IMG_SUFFIXES:
                samples.append((str(p), ci))
            elif p.name.lower() not in _IGNORED:
                skipped.append(str(p.relative_to(root)))
        if len(samples) == n0:
            empty.append(c)
    if skipped:
        LOGGER.warning(f"warning: {d}: skipped {len(skipped)} non-image file(s): {', '.join(skipped[:5])}"
                       + (" ..." if len(skipped) > 5 else ""))
    if empty:
        raise DatasetError(f"{d}: class folder(s) with no images: {', '.join(empty[:5])}"
                           + (f" (+{len(empty) - 5} more)" if len(empty) > 5 else "")
                           + f" (image suffixes: {', '.join(sorted(IMG_SUFFIXES))})")
    if not samples:
        raise DatasetError(f"{d} holds no images")
    return samples, names


# --------------------------------------------------------------------------------------------- dataset
class ClassificationDataset:
    """A torch-style map dataset over one split. ``transform(PIL image, rng) -> CHW float32 array``.

    Indices may be ints or ``(index, epoch)`` pairs (from :class:`EpochSampler`): the random state of a train
    transform then depends only on ``(seed, epoch, index)``, so augmentation is the same whatever the number
    of workers or processes, and a resumed run sees exactly the images an uninterrupted one would.
    A sample whose image cannot be decoded comes back as ``None`` (see :func:`collate`).
    """

    def __init__(self, root, split: str = "train", transform=None, names: list[str] | None = None,
                 fraction: float | None = None, seed: int = 0, cache: bool = False):
        self.root = Path(root)
        self.split = resolve_split(self.root, split)   # the split read (val <-> test when one is missing)
        self.samples, self.names = scan_split(self.root, self.split, names)
        if fraction is not None and 0 < float(fraction) < 1:
            # keep every class: take the same share of each, in a seeded order
            rng = np.random.default_rng(seed)
            keep = []
            labels = np.array([c for _, c in self.samples])
            for ci in np.unique(labels):
                idx = np.flatnonzero(labels == ci)
                k = max(1, int(round(len(idx) * float(fraction))))
                keep.extend(sorted(rng.permutation(idx)[:k].tolist()))
            self.samples = [self.samples[i] for i in sorted(keep)]
        self.transform = transform
        self.seed = int(seed)
        self._cache: dict[int, object] | None = {} if cache else None

    def __len__(self):
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [c for _, c in self.samples]

    def load(self, i: int):
        """Decoded RGB PIL image of sample ``i`` (cached in RAM when ``cache``)."""
        from yolo_export.data.transforms import open_image

        if self._cache is not None and i in self._cache:
            return self._cache[i]
        im = open_image(self.samples[i][0])
        if self._cache is not None:
            self._cache[i] = im
        return im

    def __getitem__(self, item):
        i, epoch = item if isinstance(item, tuple) else (item, 0)
        path, label = self.samples[i]
        try:
            if getattr(self.transform, "takes_path", False):
                return self.transform(path), label, i
            im = self.load(i)
        except ImageError as e:
            return None, path, str(e)
        rng = np.random.default_rng([self.seed, int(epoch), int(i)])
        x = self.transform(im, rng) if self.transform is not None else np.asarray(im)
        return x, label, i


def collate(batch):
    """Stack good samples; count and name the bad ones: ``(x, y, idx, bad)`` with ``bad = [(path, why), ...]``."""
    import torch

    good = [b for b in batch if b[0] is not None]
    bad = [(b[1], b[2]) for b in batch if b[0] is None]
    if not good:
        return None, None, None, bad
    x = torch.from_numpy(np.stack([b[0] for b in good]))
    y = torch.tensor([b[1] for b in good], dtype=torch.long)
    idx = torch.tensor([b[2] for b in good], dtype=torch.long)
    return x, y, idx, bad


class Batches:
    """One pass over a loader of :func:`collate` batches: yields ``(x, y, idx)`` (``x`` is ``None`` when none of a
    batch's images could be decoded), at most ``limit`` batches. The pass keeps ``bad`` (``(path, why)`` of every image
    that could not be decoded, in order; ``on_bad(path, why)`` is also called as each comes), ``wait`` (seconds spent
    waiting for batches) and ``last_wait`` (for the latest batch). The one loop that training and validation share."""

    def __init__(self, loader, limit: int | None = None, on_bad=None):
        self.loader, self.limit, self.on_bad = loader, limit, on_bad
        self.bad: list[tuple[str, str]] = []
        self.wait = self.last_wait = 0.0

    @property
    def skipped(self) -> int:
        return len(self.bad)

    def __iter__(self):
        it = iter(self.loader)
        n = 0
        while self.limit is None or n < self.limit:
            t0 = time.perf_counter()
            try:
                x, y, idx, bad = next(it)
            except StopIteration:
                return
            self.last_wait = time.perf_counter() - t0
            self.wait += self.last_wait
            n += 1
            for path, why in bad or ():
                self.bad.append((path, why))
                if self.on_bad is not None:
                    self.on_bad(path, why)
            yield x, y, idx


class EpochSampler:
    """Yields ``(index, epoch)`` pairs: shuffled per epoch with ``seed + epoch`` (train) or in order (val).

    With ``world > 1`` each rank gets its own shard: a :class:`torch.utils.data.DistributedSampler` for training
    (it pads so that every rank runs the same number of steps), and a strided, unpadded shard for evaluation
    (so that counts reduced across ranks count every image exactly once).
    """

    def __init__(self, n: int, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1, drop_last: bool = False):
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, int(seed), rank, world
        self.epoch = 0
        self.inner = None
        if world > 1 and shuffle:
            from torch.utils.data import DistributedSampler

            self.inner = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=self.seed,
                                            drop_last=drop_last)

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)
        if self.inner is not None:
            self.inner.set_epoch(self.epoch)

    def indices(self) -> list[int]:
        if self.inner is not None:
            return list(self.inner)
        if self.shuffle:
            import torch

            g = torch.Generator().manual_seed(self.seed + self.epoch)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        return idx[self.rank::self.world] if self.world > 1 else idx

    def __iter__(self):
        return iter([(i, self.epoch) for i in self.indices()])

    def __len__(self):
        return len(self.inner) if self.inner is not None else len(range(self.rank, self.n, self.world))
