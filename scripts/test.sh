#!/usr/bin/env bash
# Set up (or reuse) .venv and run the default test suite; this is what CI runs.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` for the heavy runs.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
# Pin torch first in the same resolve: a CPU machine takes the local CPU build, not GBs of CUDA.
.venv/bin/pip install -q torch==2.13.0 -e ".[test]"

# Browser tests drive Debian's Chromium through Playwright; never `playwright install`.
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q chromium >/dev/null || { $SUDO apt-get update -q && $SUDO apt-get install -y -q chromium; }
fi

exec .venv/bin/python -m pytest "$@"
