#!/usr/bin/env bash
# The test suite: set up, lint with ruff, type-check mmenc/ with mypy (strict, see
# pyproject.toml), then run pytest over the core and every plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=${MMENC_VENV:-.venv}
"$venv/bin/ruff" check --quiet .
"$venv/bin/mypy" mmenc
exec "$venv/bin/python" -m pytest --durations=15 "$@"
