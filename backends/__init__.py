"""Backends: one module per format family, the only place a backend library is imported (inside functions).

Shipped as ``yolo_export.backends``; see ``yolo_export/registry.py`` for the contract.
"""
