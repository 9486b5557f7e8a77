#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite without the slow tests (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -m "not slow" "$@"
