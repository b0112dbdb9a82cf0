#!/usr/bin/env bash
# The GPU check from a fresh checkout, on a machine with a CUDA GPU, PyTorch and transformers (8 minutes at most).
#
#   bash benchmarks/gpu_check.sh fetch     # where pip reaches PyPI: luopan's own dependencies as wheels in .whl/
#                                          # (for a GPU machine without network; its Python is 3.12)
#   bash benchmarks/gpu_check.sh [ARGS]    # on the GPU machine: installs .whl/ if present, runs gpu_check.py ARGS
#
# luopan itself is used from the checkout (core/ and plugins/ on PYTHONPATH): nothing is built. vLLM and LMDeploy
# are used where they are installed (their CUDA wheels are far larger than what such a machine can be given);
# a missing engine is a row of the table saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEPS="pydantic pydantic-core annotated-types typing-inspection typing-extensions structlog orjson pluggy"

if [ "${1:-}" = fetch ]; then
  mkdir -p .whl
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $DEPS
  ls .whl
  exit 0
fi

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/luopan-site \
    .whl/*.whl
  export PYTHONPATH="/tmp/luopan-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/core:$PWD/plugins${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
timeout 480 "$PY" benchmarks/gpu_check.py "$@"
