#!/usr/bin/env bash
# Quick start 2/2: set up, then run the whole test suite on CPU with 8 fake devices (tests/conftest.py),
# one file per worker process, longest files first (tests/conftest.py), as many workers as cores (at most 4;
# GENRE_JAX_TEST_WORKERS=N to choose, 0 = in this process). Extra arguments go to pytest (e.g. -k tokenizers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cores=$(nproc 2>/dev/null || echo 2)
workers=${GENRE_JAX_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
exec .venv/bin/python -m pytest -q -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
