#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks: espeak-ng (speech for /tts and tests),
# chromium and chromium-driver (the /ui browser test drives the system browser), then .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

MISSING=()
command -v espeak-ng >/dev/null 2>&1 || MISSING+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || MISSING+=(chromium)
command -v chromedriver >/dev/null 2>&1 || MISSING+=(chromium-driver)
if [ "${#MISSING[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${MISSING[@]}"
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[serve,test,load]"
