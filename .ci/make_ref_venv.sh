#!/usr/bin/env bash
# The reference venv for the cross-check tests (tests/test_reference.py): the reference package with the runtimes its
# exporter needs for the formats it writes offline here. Never a runtime dependency of yolo-export.
# Kept in the user cache, keyed by the pinned versions, and reused by later runs; a half-built venv is never reused
# (the marker file is written last). Prints the venv's python on the last line of stdout.
set -euo pipefail
export PIP_DISABLE_PIP_VERSION_CHECK=1
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
# torch + torchvision: the pair that imports together here (the CUDA build; it runs on CPU).
REQS=(
  "torch==2.14.1" "torchvision==0.29.1" "ultralytics==8.4.190"
  "onnx==1.23.2" "onnxruntime==1.32.0" "onnxslim==0.1.98"
  "openvino==2026.4.1"
  "ncnn==1.0.20261020" "pnnx==20261020"
  "MNN==3.6.1"
  "coremltools==9.0"
  "x2paddle==1.6.0" "paddlepaddle==3.3.1" "six==1.17.0"
)
KEY="$(printf '%s\n' "$("$PY" -c 'import sys; print("py%d.%d" % sys.version_info[:2])')" "${REQS[@]}" \
       | sha256sum | cut -c1-12)"
ROOT="${YOLO_EXPORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/yolo-export}"
VENV="$ROOT/ref-venv-$KEY"
if [ ! -f "$VENV/.complete" ]; then
  echo "== reference venv: building $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$ROOT"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q "${REQS[@]}" >&2
  "$VENV/bin/python" -c "import torch, torchvision, ultralytics, onnx, onnxruntime, openvino" >&2
  printf '%s\n' "${REQS[@]}" > "$VENV/.complete"
else
  echo "== reference venv: reusing $VENV" >&2
fi
echo "$VENV/bin/python"
