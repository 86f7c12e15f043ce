#!/usr/bin/env bash
# Quick start 1/2: set up, then train + evaluate the default model on the bundled cpu_act dataset.
# Extra arguments go to launch.py (e.g. --workdir=runs/mine --config.seed=1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python launch.py "$@"
