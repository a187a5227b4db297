#!/usr/bin/env bash
# The TensorFlow family's packages that pip cannot resolve beside tensorflow-cpu, and the TF.js runner's npm packages.
# Run with the project venv active, after `pip install -e ".[all,dev]"` (or ".[tensorflow,tfjs]").
#  - onnx2tf, tf-keras, tensorflow-hub and tensorflowjs declare `tensorflow` (the full GPU package, which would be
#    installed beside tensorflow-cpu); tensorflowjs also declares tensorflow-decision-forests (which pins an older
#    TensorFlow and which the graph-model conversion never uses) and packaging~=23.1. Their real imports are covered
#    by the [tensorflow]/[tfjs] extras, so they go in with --no-deps, pinned to the versions tested.
#  - Node.js >= 18 and npm run the TF.js runner; its packages go to `python -m yolo_export.backends.tfjs prefix`
#    ($YOLO_EXPORT_NODE_PATH, else ~/.cache/yolo-export/node). No network is needed after this script.
set -euo pipefail
python -m pip install -q --no-deps "onnx2tf==1.29.24" "tf-keras==2.21.0" "tensorflow-hub==0.16.1" "tensorflowjs==4.22.0"

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if ! command -v node >/dev/null || [ "$(node_major)" -lt 18 ] || ! command -v npm >/dev/null; then
  echo "== installing Node.js and npm (apt)"
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
fi
if [ "$(node_major)" -lt 18 ]; then
  echo "Node.js $(node --version 2>/dev/null || echo missing) is too old for the TF.js runner (needs >= 18)" >&2
  exit 1
fi
PREFIX="$(python -m yolo_export.backends.tfjs prefix)"
mkdir -p "$PREFIX"
echo "== npm packages for the TF.js runner -> $PREFIX"
# shellcheck disable=SC2046
npm install --no-audit --no-fund --loglevel=error --prefix "$PREFIX" $(python -m yolo_export.backends.tfjs npm-packages)
python -c "from yolo_export.backends.tfjs import node_status; ok, why = node_status(); print('TF.js runner:', 'ready' if ok else why); raise SystemExit(0 if ok else 1)"
