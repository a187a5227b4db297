#!/usr/bin/env bash
# Headless Chromium for the TF.js browser-demo test (tests/test_tfjs_browser.py), from Debian's `chromium` package.
# Idempotent: does nothing when a Chromium is already on PATH (or at $YOLO_EXPORT_CHROMIUM). Where apt-get is
# missing it says so and carries on: the test then skips with that reason.
set -euo pipefail
for c in "${YOLO_EXPORT_CHROMIUM:-}" chromium chromium-browser; do
  if [ -n "$c" ] && command -v "$c" >/dev/null; then
    echo "== Chromium already installed: $("$c" --version 2>/dev/null | head -n1)"
    exit 0
  fi
done
if ! command -v apt-get >/dev/null; then
  echo "== no apt-get here: install Chromium yourself for the browser-demo test (it skips without one)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
echo "== installing Chromium (apt)"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
echo "== $(chromium --version 2>/dev/null | head -n1)"
