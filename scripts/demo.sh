#!/usr/bin/env bash
# The main job end to end: set up, build the offline benchmark, adapt the default backbone with PACE on
# session 0 (CPU), export a bundle, then let the runtime learn the remaining sessions closed-form.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/demo.py "$@"
