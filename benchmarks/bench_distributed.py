"""Multi-process training throughput on a CPU: the embedded default's training job with 2 processes against 1.

Run: ``.venv/bin/python -m pytest benchmarks/bench_distributed.py --benchmark-only -q -s``
(about 1 to 2 minutes on an idle 2-core CPU); ``snakemake --cores all bench`` runs it too.

The setup is the embedded default's (``config/config.yaml``), as the pipeline builds it: clips
generated at its size and frame count (fewer of them), prepared with its ``data.prepare`` settings,
the latent codec fitted with its ``data.latent`` settings, and the training job of its largest
fitting size at the grid's middle batch (all the members the default trains in that job, each
member's config from ``pipeline.runs.ensemble_config``), for ``STEPS`` steps with a short validation.
The same job is trained by ``python -m dit.train --ensemble`` with 1 process of 1 thread, by
``torchrun --nproc-per-node=2`` (gloo, 1 thread each) and by 1 process of 2 threads. Throughput is
the training tokens/s the engine records for the job (its members' tokens together, validation
excluded), the median over milestones; the scaling efficiency of 2 processes is
``tokens/s(2 processes) / (2 * tokens/s(1 process, 1 thread))``. On a CUDA machine the test is skipped:
``bench_model_flops`` times the paper's sizes there.
"""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from harness import ROOT, Experiment, run_context
from pipeline.runs import ensemble_config

DEFAULT = Experiment.load("config")
SIZE = DEFAULT.sizes[-1]
BATCH_CLIPS = DEFAULT.middle_batch_clips
GENERATED_CLIPS = 160
STEPS = 30
PROCESSES = 2


def _run(*args: str, threads: int = 1, timeout: float = 600) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, *args], check=True, env=env, capture_output=True, timeout=timeout, cwd=ROOT)


def _prepared_data(base: Path) -> tuple[Path, Path]:
    """The default's data stage on ``GENERATED_CLIPS`` clips: the prepared folder and the latent codec."""
    data = DEFAULT.config["data"]
    generate, prepare, latent = data["generate"], data["prepare"], data["latent"]
    source, prepared, codec = base / "source", base / "prepared", base / "latent_codec.npz"
    _run("-m", "dit.data", "generate", "--out", str(source), "--clips", str(GENERATED_CLIPS), "--seed",
         str(generate["seed"]), "--frames", str(generate["frames"]), "--size", str(generate["size"]),
         "--fps", str(generate["fps"]))
    _run("-m", "dit.data", "prepare", "--source", str(source), "--out", str(prepared), "--frames",
         str(prepare["frames"]), "--height", str(prepare["height"]), "--width", str(prepare["width"]),
         "--validation-fraction", "0.1", "--vocab-size", str(prepare["vocab_size"]),
         "--caption-length", str(prepare["caption_length"]), "--workers", "2")
    _run("-m", "dit.latent", "fit", "--data", str(prepared), "--out", str(codec), "--patch",
         *(str(p) for p in latent["patch"]), "--channels", str(latent["channels"]),
         "--max-clips", str(min(latent["max_clips"], GENERATED_CLIPS)), "--seed", str(latent["seed"]))
    return prepared, codec


def _job_file(base: Path, name: str, prepared: Path, codec: Path, threads: int) -> tuple[Path, int]:
    """The default's job at (``SIZE``, ``BATCH_CLIPS``) as a ``dit.train --ensemble`` file, shortened to
    ``STEPS`` steps; returns the file and the member count."""
    job = DEFAULT.job(SIZE, BATCH_CLIPS)
    ensemble = ensemble_config(DEFAULT.config, job, str(base / name / "runs"), str(prepared), str(codec))
    tokens = STEPS * BATCH_CLIPS * DEFAULT.model_config(SIZE).tokens_per_clip
    for member in ensemble["members"]:
        member["config"].update(threads=threads, checkpoint={"every_steps": 10 * STEPS},
                                progress={"quiet": True}, schedule={"milestones_tokens": [tokens // 3, 2 * tokens // 3, tokens]},
                                validation={**member["config"]["validation"], "timesteps": 2, "max_clips": 16})
    path = base / f"{name}.yaml"
    path.write_text(yaml.safe_dump(ensemble))
    return path, len(ensemble["members"])


def _train(base: Path, name: str, prepared: Path, codec: Path, processes: int, threads: int) -> float:
    """Train the job; return its training tokens/s (all members, median over milestones)."""
    path, members = _job_file(base, name, prepared, codec, threads)
    train = ["-m", "dit.train", "--ensemble", str(path), "--out", str(base / name / "job")]
    if processes > 1:
        train = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *train]
    _run(*train, threads=threads, timeout=900)
    first_run = sorted((base / name / "runs").rglob("metrics.csv"))[0]
    with open(first_run) as handle:
        return members * statistics.median(float(row["tokens_per_s"]) for row in csv.DictReader(handle))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the multi-process CPU benchmark runs on CPU machines")
def test_two_processes_against_one_on_cpu(tmp_path, benchmark):
    prepared, codec = _prepared_data(tmp_path)
    settings = {"1 process, 1 thread": (1, 1), f"{PROCESSES} processes, 1 thread each": (PROCESSES, 1),
                f"1 process, {PROCESSES} threads": (1, PROCESSES)}
    results = {}

    def measure():
        for index, (name, (processes, threads)) in enumerate(settings.items()):
            results[name] = _train(tmp_path, f"setting{index}", prepared, codec, processes, threads)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    members = len(DEFAULT.job_learning_rates(SIZE, BATCH_CLIPS))
    efficiency = results[f"{PROCESSES} processes, 1 thread each"] / (PROCESSES * results["1 process, 1 thread"])
    benchmark.extra_info.update(run_context(torch.device("cpu"), torch.float32, BATCH_CLIPS, DEFAULT.clip,
                                            DEFAULT.config["model"]["attention"], members=members, threads=1))
    benchmark.extra_info.update(size=SIZE, steps=STEPS, tokens_per_s=results, scaling_efficiency_2_processes=efficiency,
                                settings={name: {"processes": p, "threads": t} for name, (p, t) in settings.items()})
    print(f"\n{SIZE} job of {members} members, batch {BATCH_CLIPS} clips each, {STEPS} steps, {os.cpu_count()} CPU cores:")
    for name, tokens_per_s in results.items():
        print(f"  {name:<28} {tokens_per_s:>10,.0f} training tokens/s (all members)")
    print(f"  scaling efficiency of {PROCESSES} processes vs 1: {efficiency:.2f} (1.00 = perfect)")
