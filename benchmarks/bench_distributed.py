"""Multi-process training throughput: 2 processes against 1, and paper-family sizes on one GPU.

Run: ``.venv/bin/python -m pytest benchmarks/bench_distributed.py --benchmark-only -q -s``
(about a minute on an idle 2-core CPU).

* CPU: the same run (size, global batch, tokens) trained by ``python -m dit.train`` with 1 process
  and by ``torchrun --nproc-per-node=2`` (gloo, one thread each), and with 1 process using 2 threads.
  Throughput is the training tokens/s the engine records (validation excluded); the scaling
  efficiency of 2 processes is ``tokens/s(2 processes) / (2 * tokens/s(1 process, 1 thread))``.
* CUDA (only where a GPU exists): one training step of each paper-family size with bf16 autocast and
  xformers attention at 1280 tokens per clip: tokens/s, achieved FLOP/s (paper C_token) and peak memory.
"""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
SIZE = "tiny-262k"
GLOBAL_BATCH_CLIPS = 32
TOKENS = 2048 * 48  # 64 tokens per clip: 48 steps of 2,048 tokens


def _prepared_data(base: Path) -> Path:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    source, prepared = base / "source", base / "prepared"
    subprocess.run([sys.executable, "-m", "dit.data", "generate", "--out", str(source), "--clips", "256",
                    "--seed", "0"], check=True, env=env, capture_output=True)
    subprocess.run([sys.executable, "-m", "dit.data", "prepare", "--source", str(source), "--out", str(prepared),
                    "--height", "16", "--width", "16", "--validation-fraction", "0.1"],
                   check=True, env=env, capture_output=True)
    return prepared


def _train(base: Path, name: str, data: Path, processes: int, threads: int) -> float:
    """Train the benchmark run; return the engine's training tokens/s (median over milestones)."""
    config = {
        "seed": 0, "threads": threads,
        "model": {"size": SIZE, "patch": [2, 4, 4], "attention": "sdpa"},
        "data": {"root": str(data)},
        "optimizer": {"lr": 5e-3, "warmup_steps": 10},
        "batch": {"global_clips": GLOBAL_BATCH_CLIPS},
        "schedule": {"milestones_tokens": [TOKENS // 3, 2 * TOKENS // 3, TOKENS]},
        "validation": {"timesteps": 2, "max_clips": 16},
        "checkpoint": {"every_steps": 10_000},
        "progress": {"quiet": True},
    }
    config_path = base / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    out = base / name
    train = ["-m", "dit.train", "--config", str(config_path), "--out", str(out)]
    if processes == 1:
        command = [sys.executable, *train]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *train]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=900)
    with open(out / "metrics.csv") as handle:
        return statistics.median(float(row["tokens_per_s"]) for row in csv.DictReader(handle))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU scaling benchmark runs on CPU machines")
def test_two_processes_against_one_on_cpu(tmp_path, benchmark):
    data = _prepared_data(tmp_path)
    results = {}

    def measure():
        results["1 process, 1 thread"] = _train(tmp_path, "p1t1", data, processes=1, threads=1)
        results["2 processes, 1 thread each"] = _train(tmp_path, "p2t1", data, processes=2, threads=1)
        results["1 process, 2 threads"] = _train(tmp_path, "p1t2", data, processes=1, threads=2)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    efficiency = results["2 processes, 1 thread each"] / (2 * results["1 process, 1 thread"])
    benchmark.extra_info.update(size=SIZE, global_batch_clips=GLOBAL_BATCH_CLIPS, tokens=TOKENS, **results,
                                scaling_efficiency_2_processes=efficiency)
    print(f"\n{SIZE}, global batch {GLOBAL_BATCH_CLIPS} clips, {os.cpu_count()} CPU cores:")
    for name, tokens_per_s in results.items():
        print(f"  {name:<28} {tokens_per_s:>10,.0f} training tokens/s")
    print(f"  scaling efficiency of 2 processes vs 1: {efficiency:.2f} (1.00 = perfect)")


PAPER_SIZES = ["paper-0.017b", "paper-0.057b", "paper-0.13b", "paper-0.26b", "paper-0.72b", "paper-1.07b"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("size", PAPER_SIZES)
def test_paper_sizes_on_one_gpu(benchmark, size):
    from dit.diffusion import NoiseSchedule, epsilon_mse
    from dit.flops import paper_flops_per_token
    from dit.model import VideoDiT, VideoDiTConfig

    device = torch.device("cuda")
    config = VideoDiTConfig.from_size(size, clip_frames=20, clip_height=256, clip_width=256, patch=(4, 16, 16),
                                      attention="xformers")
    torch.manual_seed(0)
    model = VideoDiT(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    schedule = NoiseSchedule()
    batch = 8
    x0 = torch.rand(batch, 3, 20, 256, 256, device=device) * 2 - 1
    noise = torch.randn_like(x0)
    timesteps = torch.randint(0, 1000, (batch,), device=device)
    ids = torch.randint(2, config.vocab_size, (batch, config.caption_length), device=device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = epsilon_mse(model, schedule, x0, timesteps, noise, ids).float().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()

    torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=2)
    seconds = statistics.median(benchmark.stats.stats.data)
    tokens = batch * config.tokens_per_clip
    flops = paper_flops_per_token(model.non_embedding_parameters(), config.tokens_per_clip, config.width) * tokens
    benchmark.extra_info.update(
        size=size, device=torch.cuda.get_device_name(), batch_clips=batch, tokens_per_s=tokens / seconds,
        paper_tflops_per_s=flops / seconds / 1e12, peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30,
    )
    print(f"\n{size} on {torch.cuda.get_device_name()}: {tokens / seconds:,.0f} tokens/s, "
          f"{flops / seconds / 1e12:.1f} TFLOP/s (paper C_token), peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
