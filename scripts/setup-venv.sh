#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install the package with the
# extras given as arguments (e.g. "test,slurm"). Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet -e "$spec"
    touch "$stamp"
fi
