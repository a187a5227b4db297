"""A damaged artefact must never take the process down: a few seeded mutants (``tests/damaged``) of the formats whose
runtime crashed on one, each predicted by the real CLI in a child process, end as an answer or as one line of the
project's errors, never as a signal, a hang, an exit without our error, or a memory blow-up. The full table for every
format: ``python benchmarks/damaged_artefacts.py --per-format 40``.
"""

from __future__ import annotations

import ctypes

import pytest

from damaged import FATAL, make_image, predict_args, run_format
from damaged import Worker, classify
from yolo_export import registry
from yolo_export.errors import FileError
from yolo_export.isolation import try_in_child

# seeds of benchmarks/damaged_artefacts.py whose mutant took the process down before the format's fix (ncnn's:
# test_ncnn_inflated_padding_is_one_line), or ended as a non-project exception (executorch)
SEEDS = {"mnn": [7, 15, 31], "executorch": [39]}


def _crash(payload, report):
    ctypes.string_at(0)   # a runtime reading out of bounds


def _allocate(payload, report):
    return bytearray(payload)   # a runtime allocating what a damaged length field asks for


def test_a_runtime_that_crashes_or_allocates_without_bound_in_the_child_is_one_file_error(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"\0" * 64)
    with pytest.raises(FileError, match=r"cannot read .*model\.bin as a test model: the runtime crashed \(SIGSEGV\)"):
        try_in_child(_crash, None, [f], "a test model")
    with pytest.raises(FileError, match=r"ran out of memory \(over [0-9,]+ bytes; set YOLO_EXPORT_MAX_RUNTIME_MEMORY"):
        try_in_child(_allocate, 64 << 30, [f], "a test model")
    try_in_child(_allocate, 16, [f], "a test model")        # succeeds, and is remembered for the same file


def _pad_inflated(artefact, dest):
    """The kind of ncnn mutant that crashed the process (SIGSEGV): the padding (4=) of the Convolutions raised to
    65536."""
    import shutil

    out = dest / artefact.name
    shutil.copytree(artefact, out)
    param = out / "model.ncnn.param"
    lines = param.read_text().split("\n")
    param.write_text("\n".join(ln.replace(" 4=1 ", " 4=65536 ") if ln.startswith("Convolution ") else ln
                               for ln in lines))
    return out


@pytest.mark.xdist_group("ncnn")
def test_ncnn_inflated_padding_is_one_line(exported, tmp_path):
    row = exported("ncnn", "fp32")
    row.need(runtime=True)
    bad = _pad_inflated(row.path, tmp_path)
    image = make_image(tmp_path / "image.jpg")
    w = Worker("yolo_export.backends.ncnn,ncnn", tmp_path)
    try:
        rec, out, err = w.run(predict_args(row.backend, bad, image), 120, "pad")
    finally:
        w.close()
    kind, detail = classify(rec, out, err, [])
    assert kind == "clean" and detail.startswith("FileError:"), (kind, detail, err[-2000:])


@pytest.mark.parametrize("fmt", [pytest.param(f, marks=pytest.mark.xdist_group(f)) for f in sorted(SEEDS)])
def test_damaged_artefacts_never_take_the_process_down(fmt, exported, tmp_path):
    """On the worker of the format's contract rows (``xdist_group``), which exported it already."""
    row = exported(fmt, registry.get(fmt).precisions[0])
    row.need(runtime=True)
    outs = run_format(row.backend, row.path, SEEDS[fmt], tmp_path, timeout=120, reference=False)
    assert not [o for o in outs if o.kind in FATAL], outs
    assert all(o.kind in ("answer", "clean") for o in outs), outs


@pytest.mark.xdist_group("tensorflow")
def test_a_tflite_that_lost_its_metadata_runs_in_its_own_layout_with_names_and_imgsz_given(exported, tmp_path):
    """A .tflite cut short of its metadata archive (damaged, or written by another tool) with --names / --imgsz:
    NHWC input, the format's layout (it ended as a non-project exception when NCHW was assumed)."""
    import numpy as np

    from yolo_export import YOLO
    from yolo_export.backends.tensorflow import tflite_model_bytes

    row = exported("tflite", "fp32")
    row.need(runtime=True)
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(tflite_model_bytes(row.path.read_bytes()))
    m = YOLO(bare, names=[f"c{i}" for i in range(10)], imgsz=32)
    image = make_image(tmp_path / "image.jpg")
    assert np.allclose(m(image)[0].probs.data, YOLO(row.path)(image)[0].probs.data, atol=1e-4)
