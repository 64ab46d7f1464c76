#!/usr/bin/env bash
# The test suite: set up, then run pytest over the core and every plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${MMENC_VENV:-.venv}/bin/python" -m pytest "$@"
