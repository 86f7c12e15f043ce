#!/usr/bin/env bash
# Creates .venv (if missing) and installs the pinned requirements plus this package (editable).
# Accelerator: GENRE_JAX_ACCELERATOR=cpu (default) | cuda12 | tpu, or the first argument; cuda12 and
# tpu add JAX's accelerator build (same jax version) on top of the CPU requirements.
# Also libtpu (the version jax[tpu]==0.10.2 pins, ~680 MB) into .libtpu/, outside the venv, for
# compiling programs for TPU slices without a TPU (benchmarks/aot.py, tests/test_aot.py): in the venv,
# an unset JAX_PLATFORMS would make every CPU launch try a TPU backend first. GENRE_JAX_LIBTPU=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
accel=${GENRE_JAX_ACCELERATOR:-${1:-cpu}}
# tpu also gets the packages a gs:// workdir needs (docs/accelerators.md, "Bucket workdirs")
case "$accel" in
  cpu) extra=() ;;
  cuda12) extra=("jax[cuda12]==0.10.2") ;;
  tpu) extra=("jax[tpu]==0.10.2" "gcsfs==2026.10.1" "google-cloud-storage==3.17.1") ;;
  *) echo "error: accelerator '$accel': expected cpu, cuda12 or tpu" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.genre_jax_installed
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
    || [ "$(cat "$stamp")" != "$accel" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  if [ ${#extra[@]} -gt 0 ]; then
    .venv/bin/python -m pip install -q "${extra[@]}"
  fi
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$accel" > "$stamp"
fi
libtpu=libtpu==0.0.42.1
if [ "${GENRE_JAX_LIBTPU:-1}" != 0 ] && [ "$(cat .libtpu/.installed 2>/dev/null)" != "$libtpu" ]; then
  rm -rf .libtpu
  if .venv/bin/python -m pip install -q --no-deps --target .libtpu "$libtpu"; then
    echo "$libtpu" > .libtpu/.installed
  else
    rm -rf .libtpu
    echo "warning: could not install $libtpu into .libtpu/; tests/test_aot.py will be skipped" >&2
  fi
fi
