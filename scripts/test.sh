#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite. pytest's "no tests collected" (exit 5) is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest -q -ra --durations=15 "$@"
rc=$?
if [ "$rc" = 5 ]; then echo "error: no tests were collected" >&2; exit 1; fi
exit "$rc"
