"""The package version, in a module of its own: modules inside the package read it from here, not from the package
facade (``yolo_export/__init__``), so that no module depends on the facade."""

__version__ = "0.1.0"
