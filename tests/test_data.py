"""Datasets (ImageFolder checks, the built-in digits), train/eval transforms, samplers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from yolo_export.errors import DatasetError


def make_folder(root: Path, classes=("a", "b", "c"), n_train=4, n_val=2, size=(12, 10)) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


def test_digits_materialised_once_with_fixed_split(tmp_path, monkeypatch):
    from yolo_export.data.datasets import ClassificationDataset, resolve_dataset

    monkeypatch.setenv("YOLO_EXPORT_CACHE", str(tmp_path / "cache"))
    # a half-built copy from a killed run (no completion stamp) is replaced, not used
    stale = tmp_path / "cache" / "datasets" / "digits" / "train" / "0"
    stale.mkdir(parents=True)
    (stale / "junk.png").write_bytes(b"partial")
    root = resolve_dataset("digits")
    assert root == tmp_path / "cache" / "datasets" / "digits"
    assert not (root / "train" / "0" / "junk.png").exists()
    tr, va = ClassificationDataset(root, "train"), ClassificationDataset(root, "val")
    assert (len(tr), len(va)) == (1438, 359)
    assert tr.names == [str(i) for i in range(10)] == va.names
    assert set(va.labels) == set(range(10))
    # the documented split: sample i is in val iff i % 5 == 4; the file name is the sample index
    assert all(int(Path(p).stem) % 5 == 4 for p, _ in va.samples)
    assert all(int(Path(p).stem) % 5 != 4 for p, _ in tr.samples)
    from sklearn.datasets import load_digits

    target = load_digits().target
    assert all(target[int(Path(p).stem)] == c for p, c in tr.samples[::50])
    stamp = (root / ".complete").stat().st_mtime_ns
    assert resolve_dataset("digits") == root and (root / ".complete").stat().st_mtime_ns == stamp  # reused
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".digits")]  # no temp dirs left


def test_digits_finished_by_another_process_meanwhile_is_kept(tmp_path, monkeypatch):
    """Two processes (DDP ranks, test workers) building digits at once: the one that finishes second keeps the
    first one's complete copy (another process may be reading it) instead of replacing it."""
    import sklearn.datasets

    from yolo_export.data import datasets

    monkeypatch.setenv("YOLO_EXPORT_CACHE", str(tmp_path / "cache"))
    real = sklearn.datasets.load_digits

    def other_process_finishes_first():
        final = datasets.digits_dir()
        (final / "train" / "0").mkdir(parents=True)
        (final / "train" / "0" / "in-use.png").write_bytes(b"theirs")
        (final / ".complete").write_text(datasets.DIGITS_VERSION)
        return real()

    monkeypatch.setattr(sklearn.datasets, "load_digits", other_process_finishes_first)
    root = datasets.materialise_digits()
    assert (root / "train" / "0" / "in-use.png").read_bytes() == b"theirs"
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".digits")]  # no temp dirs left


def test_missing_split_and_bad_roots(tmp_path):
    from yolo_export.data.datasets import ClassificationDataset, resolve_dataset

    with pytest.raises(DatasetError, match="not found"):
        resolve_dataset(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="is a file"):
        resolve_dataset(tmp_path / "file.txt")
    (tmp_path / "flat" / "cats").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no train/, val/ or test/"):
        resolve_dataset(tmp_path / "flat")
    root = make_folder(tmp_path / "ds")
    shutil.rmtree(root / "val")
    with pytest.raises(DatasetError, match="no 'val' split"):
        ClassificationDataset(resolve_dataset(root), "val")
    # test/ stands in for a missing val/
    make_folder(tmp_path / "ds2")
    (tmp_path / "ds2" / "val").rename(tmp_path / "ds2" / "test")
    assert len(ClassificationDataset(tmp_path / "ds2", "val")) == 6


def test_empty_class_extra_class_and_non_images(tmp_path, logs):
    from yolo_export.data.datasets import ClassificationDataset

    root = make_folder(tmp_path / "ds")
    (root / "train" / "b" / "notes.txt").write_text("not an image")
    (root / "train" / "README").write_text("stray")
    ds = ClassificationDataset(root, "train")
    assert len(ds) == 12 and ds.names == ["a", "b", "c"]
    assert any("notes.txt" in m for m in logs) and any("README" in m for m in logs)
    for f in (root / "train" / "c").iterdir():
        f.unlink()
    (root / "train" / "c" / "x.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="no images: c"):
        ClassificationDataset(root, "train")
    root2 = make_folder(tmp_path / "ds2")
    (root2 / "val" / "zebra").mkdir()
    shutil.copy(root2 / "val" / "a" / "0.png", root2 / "val" / "zebra" / "0.png")
    with pytest.raises(DatasetError, match="zebra"):
        ClassificationDataset(root2, "val")


def test_corrupt_image_is_returned_as_skipped(tmp_path):
    from yolo_export.data.augment import TrainTransform
    from yolo_export.data.datasets import ClassificationDataset, collate
    from yolo_export.data.transforms import default_preprocess

    root = make_folder(tmp_path / "ds", n_train=2)
    (root / "train" / "a" / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    ds = ClassificationDataset(root, "train", TrainTransform(default_preprocess(16)))
    items = [ds[(i, 0)] for i in range(len(ds))]
    x, y, idx, bad = collate(items)
    assert len(bad) == 1 and bad[0][0].endswith("bad.jpg") and "cannot read image" in bad[0][1]
    assert x.shape == (6, 3, 16, 16) and y.tolist() == [0, 0, 1, 1, 2, 2]
    bad_i = [p for p, _ in ds.samples].index(str(root / "train" / "a" / "bad.jpg"))
    assert collate([ds[(bad_i, 0)]])[0] is None  # a batch of only bad images


def test_batches_is_one_pass_that_keeps_the_corrupt_images(tmp_path):
    """The loop training and validation share: every batch, a batch of only bad images as ``x is None``, the bad
    images in order (and to ``on_bad`` as they come), the time spent waiting, at most ``limit`` batches."""
    from yolo_export.data.augment import EvalTransform
    from yolo_export.data.datasets import Batches, ClassificationDataset, EpochSampler
    from yolo_export.data.transforms import default_preprocess
    from yolo_export.engine.validator import make_loader

    root = make_folder(tmp_path / "ds", classes=("a", "b"), n_train=2)
    for name in ("bad1.jpg", "bad2.jpg"):
        (root / "train" / "b" / name).write_bytes(b"\xff\xd8 not really a jpeg")
    ds = ClassificationDataset(root, "train", EvalTransform(default_preprocess(16)))
    assert [p.rsplit("/", 1)[1] for p, _ in ds.samples] == ["0.png", "1.png", "0.png", "1.png", "bad1.jpg",
                                                            "bad2.jpg"]
    loader = make_loader(ds, 2, 0, EpochSampler(len(ds), shuffle=False))
    seen = []
    batches = Batches(loader, on_bad=lambda path, why: seen.append(Path(path).name))
    got = [(None if x is None else x.shape[0], None if y is None else y.tolist()) for x, y, _ in batches]
    assert got == [(2, [0, 0]), (2, [1, 1]), (None, None)]
    assert seen == ["bad1.jpg", "bad2.jpg"] and batches.skipped == 2
    assert [Path(p).name for p, _ in batches.bad] == seen and all("cannot read image" in w for _, w in batches.bad)
    assert batches.wait > 0 and 0 < batches.last_wait <= batches.wait
    first = Batches(loader, limit=1)
    assert len(list(first)) == 1 and first.skipped == 0


def test_train_transform_is_seeded_per_epoch_and_index():
    from PIL import Image

    from yolo_export.data.augment import PHOTO, TrainTransform
    from yolo_export.data.transforms import default_preprocess

    im = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    t = TrainTransform(default_preprocess(24), **PHOTO)
    a = t(im, np.random.default_rng([0, 1, 5]))
    b = t(im, np.random.default_rng([0, 1, 5]))
    c = t(im, np.random.default_rng([0, 2, 5]))
    assert a.shape == (3, 24, 24) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # everything off and full-area crops of a square image: the eval resize
    off = TrainTransform(default_preprocess(24), scale=(1.0, 1.0), ratio=(1.0, 1.0), fliplr=0, hsv_h=0, hsv_s=0,
                         hsv_v=0, erasing=0)
    sq = im.crop((0, 0, 40, 40))
    from yolo_export.data.transforms import preprocess

    np.testing.assert_allclose(off(sq, np.random.default_rng(0)), preprocess(sq, default_preprocess(24)), atol=1e-6)
    with pytest.raises(ValueError):
        TrainTransform(default_preprocess(24), scale=(0.0, 1.0))


def test_eval_transform_is_the_predict_path(tmp_path):
    from yolo_export.data.augment import EvalTransform
    from yolo_export.data.datasets import ClassificationDataset
    from yolo_export.data.transforms import preprocess, with_imgsz

    root = make_folder(tmp_path / "ds", size=(50, 30))
    pp = with_imgsz({"resize": 36, "crop": 32, "interpolation": "bicubic", "mean": [0.5, 0.4, 0.3],
                     "std": [0.2, 0.2, 0.2], "layout": "NCHW"}, 32)
    ds = ClassificationDataset(root, "val", EvalTransform(pp))
    x, label, i = ds[3]
    np.testing.assert_array_equal(x, preprocess(ds.samples[3][0], pp))
    assert label == ds.samples[3][1]


def test_fraction_keeps_every_class(tmp_path):
    from yolo_export.data.datasets import ClassificationDataset

    root = make_folder(tmp_path / "ds", n_train=10)
    ds = ClassificationDataset(root, "train", fraction=0.2)
    assert sorted(ds.labels) == [0, 0, 1, 1, 2, 2]


def test_epoch_sampler_shards_and_epochs():
    from yolo_export.data.datasets import EpochSampler

    s = EpochSampler(10, shuffle=True, seed=3)
    s.set_epoch(0)
    e0 = [i for i, _ in s]
    s.set_epoch(1)
    e1 = list(s)
    assert sorted(e0) == list(range(10)) and e0 != [i for i, _ in e1] and {e for _, e in e1} == {1}
    # evaluation shards: disjoint, unpadded, covering everything once
    shards = [[i for i, _ in EpochSampler(11, shuffle=False, rank=r, world=3)] for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
    # training shards (DistributedSampler): same length on every rank
    tr = [EpochSampler(11, shuffle=True, seed=0, rank=r, world=2) for r in range(2)]
    assert len(list(tr[0])) == len(list(tr[1])) == 6
