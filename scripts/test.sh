#!/usr/bin/env bash
# Quick start 2/2: set up, then run the whole test suite on CPU with 8 fake devices (tests/conftest.py).
# Extra arguments go to pytest (e.g. -k tokenizers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
