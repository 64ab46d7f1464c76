#!/usr/bin/env bash
# The main job: set up, then run `mmenc demo` on the bundled default data (outputs in runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${MMENC_VENV:-.venv}/bin/mmenc" demo "$@"
