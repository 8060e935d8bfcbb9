#!/usr/bin/env bash
# The main job: set up .venv, then regenerate the embedded default reproduction with Snakemake.
# Extra arguments go to snakemake (e.g. --configfile config/smoke.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
export PATH="$PWD/.venv/bin:$PATH"
exec snakemake --cores all --profile workflow/profiles/local "$@"
