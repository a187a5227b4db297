"""The model zoo (placeholder until the zoo lands): resolve names through weights_manifest.json."""

from __future__ import annotations

from yolo_export.errors import YoloExportError


def resolve(name: str) -> str:
    raise YoloExportError(f"checkpoint not found: {name}")
