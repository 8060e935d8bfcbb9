#!/usr/bin/env bash
# The main job: set up .venv, regenerate the embedded default reproduction with Snakemake, then
# bundle every figure and table into a self-contained HTML report ($REPORT, default
# results/report.html). Extra arguments go to snakemake (e.g. --configfile config/smoke.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
export PATH="$PWD/.venv/bin:$PATH"
snakemake --cores all --profile workflow/profiles/local "$@"
snakemake --cores 1 --profile workflow/profiles/local "$@" --report "${REPORT:-results/report.html}"
