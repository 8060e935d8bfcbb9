#!/usr/bin/env bash
# The test command: set up .venv with the test extras, then run the whole test suite.
# Extra arguments go to pytest (e.g. -m "not slow" for the fast tier).
# pytest-xdist runs the tests in DIT_TEST_WORKERS processes (default: the CPU count, at most 4) with
# --dist loadgroup: tests/conftest.py puts every test of the smoke workflow and the SLURM cluster on one
# worker, first (so each of those session fixtures is made once, and their waits overlap the other
# tests), and every other test with the rest of its module, in the order it gives (no reordering by size).
# DIT_TEST_WORKERS=0 runs everything in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh test,slurm
workers="${DIT_TEST_WORKERS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}"
exec .venv/bin/python -m pytest -n "$workers" --dist loadgroup --no-loadscope-reorder "$@"
