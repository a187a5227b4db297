"""yolo-export: a model zoo and export toolkit for YOLOv8 image classifiers.

Importing this package is cheap: torch and every backend library are imported lazily.
"""

from yolo_export._version import __version__
from yolo_export.threads import early_setup as _early_setup

_early_setup()  # before torch loads: OpenMP threads sleep when idle (see yolo_export/threads.py)

__all__ = ["YOLO", "__version__"]


def __getattr__(name):
    if name == "YOLO":
        from yolo_export.engine.model import YOLO

        return YOLO
    raise AttributeError(f"module 'yolo_export' has no attribute {name!r}")
