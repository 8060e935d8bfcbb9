#!/usr/bin/env bash
# Start, inspect or stop the one-node SLURM test cluster by hand (root, Debian packages slurm-wlm and
# munge; this script installs nothing). The cluster's files, logs and state live in DIR.
#   scripts/local-slurm.sh start  [DIR]   # prints the daemons' PIDs and a Snakemake profile for it
#   scripts/local-slurm.sh status [DIR]
#   scripts/local-slurm.sh stop   [DIR]   # cancels its jobs, stops its daemons, restores /etc/slurm/slurm.conf
# DIR defaults to /tmp/dit-local-slurm. Then, for example:
#   snakemake --profile /tmp/dit-local-slurm/snakemake-profile --configfile config/smoke.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    sed -n '2,9p' "$0" >&2
    exit 2
fi
python=.venv/bin/python
[ -x "$python" ] || python=python3
exec "$python" tests/slurm_cluster.py "$1" --dir "${2:-/tmp/dit-local-slurm}"
