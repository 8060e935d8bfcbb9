"""Launch one training run with as many processes as its resources give.

``python -m dit.launch --config-json JSON --out RUN_DIR [--processes P] [--nodes N]`` writes the run's
config to ``RUN_DIR/train.yaml`` (``--ensemble-json JSON --out JOB_DIR``: the ensemble's
members, ``{"members": [{"out": RUN_DIR, "config": {...}}, ...]}``, to ``JOB_DIR/ensemble.yaml``)
and then *replaces itself* (``exec``) with

* ``python -m dit.train`` for one process on one node, so SIGTERM reaches the trainer directly;
* ``torchrun --standalone --nproc_per_node=P -m dit.train`` for P processes on one node (gloo on
  CPU, nccl on CUDA: ``dit.distributed``);
* ``srun --ntasks-per-node=1 torchrun --nnodes=N --rdzv-backend=c10d ...`` for N > 1 nodes inside a
  SLURM allocation (the rendezvous host is the allocation's first node).

Exit codes are those of ``dit.train`` (75: preempted, rerun to resume); torchrun turns a worker's
non-zero exit into its own non-zero exit, which Snakemake's retries treat the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from dit.atomic import atomic_write_text

RENDEZVOUS_PORT = 29500


def launch_command(config_path: Path, out_dir: Path, processes: int, nodes: int, environ: dict,
                   ensemble: bool = False) -> list[str]:
    """The command that trains ``config_path`` (an ensemble file if ``ensemble``) into ``out_dir`` with
    ``processes`` per node on ``nodes``."""
    if processes < 1 or nodes < 1:
        raise ValueError(f"processes and nodes must be at least 1, got processes={processes}, nodes={nodes}")
    train_args = ["-m", "dit.train", "--ensemble" if ensemble else "--config", str(config_path), "--out", str(out_dir)]
    if processes == 1 and nodes == 1:
        return [sys.executable, *train_args]
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}"]
    if nodes == 1:
        return [*torchrun, "--standalone", *train_args]
    if "SLURM_JOB_NODELIST" not in environ:
        raise RuntimeError("--nodes > 1 needs a SLURM allocation (SLURM_JOB_NODELIST is not set)")
    head = first_slurm_host(environ["SLURM_JOB_NODELIST"])
    job = environ.get("SLURM_JOB_ID", "dit")
    return [
        "srun", f"--nodes={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
        *torchrun, f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-id={job}",
        f"--rdzv-endpoint={head}:{RENDEZVOUS_PORT}", *train_args,
    ]


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list (``scontrol show hostnames`` when it answers, else read from the list)."""
    if shutil.which("scontrol"):
        result = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.split():
            return result.stdout.split()[0]
    return first_host_of_list(nodelist)


def first_host_of_list(nodelist: str) -> str:
    """First host of a SLURM host list, each bracket replaced by its first value: ``gpu[07-12,20],cpu1`` -> ``gpu07``."""
    host, position = "", 0
    while position < len(nodelist) and nodelist[position] != ",":
        if nodelist[position] == "[":
            end = nodelist.index("]", position)
            host += nodelist[position + 1:end].split(",")[0].split("-")[0]
            position = end + 1
        else:
            host += nodelist[position]
            position += 1
    return host


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dit.launch", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config-json", help="the run's training config as JSON (dit.config keys)")
    source.add_argument("--ensemble-json", help='the members of one job as JSON: {"members": [{"out": DIR, "config": {...}}]}')
    parser.add_argument("--out", required=True, type=Path, help="run folder")
    parser.add_argument("--processes", type=int, default=1, help="training processes per node (GPUs per node on CUDA)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes (more than 1 only inside a SLURM allocation)")
    args = parser.parse_args(argv)
    ensemble = args.ensemble_json is not None
    try:  # the keys are checked by dit.train, which every process runs first
        record = json.loads(args.ensemble_json if ensemble else args.config_json)
    except json.JSONDecodeError as error:
        print(f"dit.launch: --{'ensemble' if ensemble else 'config'}-json is not valid JSON: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    config_path = args.out / ("ensemble.yaml" if ensemble else "train.yaml")
    atomic_write_text(config_path, yaml.safe_dump(record, sort_keys=False))
    try:
        command = launch_command(config_path, args.out, args.processes, args.nodes, dict(os.environ), ensemble)
    except (ValueError, RuntimeError) as error:
        print(f"dit.launch: {error}", file=sys.stderr)
        return 2
    print("dit.launch: " + " ".join(command), file=sys.stderr, flush=True)
    os.execvp(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
