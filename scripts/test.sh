#!/usr/bin/env bash
# The test command: set up .venv with the test extras, then run the whole test suite.
# Extra arguments go to pytest (e.g. -m "not slow" for the fast tier).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh test,slurm
exec .venv/bin/python -m pytest "$@"
