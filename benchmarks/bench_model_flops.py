"""Model FLOP/s of the training step as ``dit.train`` takes it, against this machine's matmul FLOP/s.

Run: ``.venv/bin/python -m pytest benchmarks/bench_model_flops.py --benchmark-only -q``
(about a minute on a 2-core CPU). On CUDA, ``-k paper-0.13b`` keeps one paper-size step
(what ``scripts/gpu-check.sh`` runs).

The step is the engine's (``harness.engine_training_step``): ``dit.engine.accumulate_gradients``
(forward and backward of the epsilon loss) and ``MemberAdamW.step`` with the config's gradient
clipping, for one run (an ensemble of one member), with bf16 autocast on CUDA and fp32 on a CPU
(``precision: auto``). Its FLOPs are ``dit.flops.training_flops_per_clip`` (every matrix product of
forward and backward, checked against ``FlopCounterMode``) times the clips; the paper's
``C_token * tokens`` is reported beside it.

Cases:

* the embedded default (``config/config.yaml``): its two largest fitting sizes and its held-out size
  on the model-space clip it trains (16 latent channels x 4 x 4 x 4, 64 tokens), at the grid's middle
  batch, with the CPU threads of one training job (``training.threads``);
* CUDA only: the paper's sizes (``config/paper.yaml``: fitting and held-out, 0.017B to 1.07B) at
  1,280 tokens per clip (16 x 5 x 32 x 32 latents, patch 1 x 2 x 2, 120 caption tokens), on the
  clips one GPU holds in the paper's smallest batch (64 clips over 8 GPUs: 8); ``scripts/gpu-check.sh``
  times paper-0.13b, the middle fitting size. The paper's config asks for xformers; where xformers
  cannot run on the device, the step runs SDPA and records ``xformers_unavailable_reason`` (the
  cuda-marked tests are what fail then).

Baseline: a square ``torch.mm`` in the training dtype (fp32 1024 x 1024 on a CPU, bf16 8192 x 8192 on
CUDA), timed in turns with the step in the same process, so the fraction of the matmul rate (on CUDA,
the model FLOP utilisation against the device's measured bf16 rate) sees the same load. The target
on a CPU: the largest default size reaches 40% of the matmul rate (reported, not asserted).
"""

from __future__ import annotations

import pytest
import torch

from dit.attention import xformers_unavailable_reason
from dit.flops import paper_flops_per_token
from dit.sizes import get_size
from harness import (
    DEVICE,
    Experiment,
    InterleavedTimer,
    engine_training_step,
    matmul_baseline,
    run_context,
    training_dtype,
)

DEFAULT = Experiment.load("config")
PAPER = Experiment.load("paper")
DEFAULT_SIZES = [*DEFAULT.sizes[-2:], *DEFAULT.heldout_sizes]
PAPER_SIZES = [*PAPER.sizes, *PAPER.heldout_sizes]
TARGET_FRACTION_OF_MATMUL = 0.40
ROUNDS, WARMUP_ROUNDS = 15, 2

_results: dict[str, dict] = {}


def summary_lines() -> list[str]:
    if not _results:
        return []
    first = next(iter(_results.values()))
    lines = ["", f"training-step model FLOP/s on {DEVICE} ({first['dtype']}, {first['threads']} threads, torch "
                 f"{torch.__version__}); baseline: {first['matmul_dtype']} torch.mm {first['matmul_size']}^2, "
                 "timed in turns with each step; fraction: model FLOP/s over the matmul's (on CUDA: the MFU)",
             f"{'size':<13}{'clips':>6}{'tokens/s':>11}{'step ms':>9}{'IQR':>7}{'GFLOP/s':>10}{'matmul GFLOP/s':>16}"
             f"{'fraction':>10}{'paper GFLOP/s':>15}"]
    for size, r in _results.items():
        lines.append(f"{size:<13}{r['batch_clips']:>6}{r['tokens_per_s']:>11.0f}{r['median_s'] * 1e3:>9.2f}"
                     f"{r['iqr_s'] * 1e3:>7.2f}{r['flops_per_s'] / 1e9:>10.2f}{r['matmul_flops_per_s'] / 1e9:>16.1f}"
                     f"{r['fraction_of_matmul']:>10.3f}{r['paper_flops_per_s'] / 1e9:>15.2f}")
    largest = _results.get(DEFAULT_SIZES[-1])
    if largest is not None and DEVICE.type == "cpu":
        verdict = "meets" if largest["fraction_of_matmul"] >= TARGET_FRACTION_OF_MATMUL else "MISSES"
        lines.append(f"largest size the default trains, {DEFAULT_SIZES[-1]}: {largest['fraction_of_matmul']:.2f} of the "
                     f"matmul FLOP/s ({verdict} the {TARGET_FRACTION_OF_MATMUL:.0%} target)")
    return lines


def _measure(benchmark, experiment: Experiment, size: str, batch_clips: int) -> dict:
    """Time the engine's step of one run of ``size`` in turns with the matmul baseline; record both.

    A config that asks for xformers where it cannot run gets SDPA, with xformers' reason recorded."""
    config = experiment.model_config(size)
    unavailable = xformers_unavailable_reason(DEVICE) if config.attention == "xformers" else None
    if unavailable is not None:
        config = experiment.model_config(size, attention="sdpa")
        benchmark.extra_info["xformers_unavailable_reason"] = unavailable
    learning_rate = float(experiment.config["grid"]["learning_rates"][0])
    step = engine_training_step(experiment, config, [learning_rate], batch_clips)
    dtype = training_dtype(DEVICE)
    baseline = matmul_baseline(DEVICE, dtype)
    timer = InterleavedTimer({"step": step.run, "matmul": baseline.run}, DEVICE)
    timer.warm_up(WARMUP_ROUNDS)
    benchmark.extra_info.update(run_context(DEVICE, dtype, batch_clips, experiment.clip, config.attention, members=1))
    benchmark.pedantic(timer.round, rounds=ROUNDS, iterations=1)
    spreads = timer.spreads()
    seconds, matmul_seconds = spreads["step"]["median_s"], spreads["matmul"]["median_s"]
    tokens = batch_clips * config.tokens_per_clip
    paper_flops = paper_flops_per_token(get_size(size).non_embedding_parameters, config.tokens_per_clip, config.width) * tokens
    result = {
        "size": size, "experiment": experiment.name, "batch_clips": batch_clips, "tokens_per_step": tokens,
        "step_flops": step.flops, "paper_step_flops": paper_flops, "median_s": seconds, "iqr_s": spreads["step"]["iqr_s"],
        "step_spread": spreads["step"], "matmul_spread": spreads["matmul"], "tokens_per_s": tokens / seconds,
        "flops_per_s": step.flops / seconds, "paper_flops_per_s": paper_flops / seconds,
        "matmul_flops_per_s": baseline.flops / matmul_seconds, "matmul_size": baseline.size,
        "matmul_dtype": str(dtype).removeprefix("torch."),
        "fraction_of_matmul": (step.flops / seconds) / (baseline.flops / matmul_seconds),
        "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
    }
    benchmark.extra_info.update(result)
    _results[size] = result
    return result


@pytest.mark.parametrize("size", DEFAULT_SIZES)
def test_default_training_step(benchmark, training_threads, size):
    _measure(benchmark, DEFAULT, size, DEFAULT.middle_batch_clips)


@pytest.mark.cuda
@pytest.mark.skipif(DEVICE.type != "cuda", reason="a paper-size step at 1,280 tokens per clip needs a CUDA device")
@pytest.mark.parametrize("size", PAPER_SIZES)
def test_paper_training_step_on_cuda(benchmark, size):
    clips_per_gpu = min(int(b) for b in PAPER.config["grid"]["batch_clips"]) // PAPER.processes
    torch.cuda.reset_peak_memory_stats()
    _measure(benchmark, PAPER, size, clips_per_gpu)
    benchmark.extra_info["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
