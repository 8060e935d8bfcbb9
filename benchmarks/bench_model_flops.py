"""Training-step throughput of the default grid's sizes against this machine's matmul FLOP/s, in one process.

Run: ``.venv/bin/python -m pytest benchmarks/bench_model_flops.py --benchmark-only -q``
(about 30 s on a 2-core CPU).

The sizes, clip shape, batch and CPU threads are those of the embedded default (``config/config.yaml``):
its two largest fitting sizes and its held-out size (the largest size the default trains), on the
model-space clip it trains on (the latent video when ``data.latent`` is set: 16 channels x 4 x 4 x 4,
64 tokens), at the grid's middle batch size, with the threads one training job gets
(``training.threads``; the pipeline runs one job per core).
Baseline: float32 ``torch.mm`` of two ``MATMUL_SIZE`` square matrices (``2 * size**3`` FLOPs a call),
at the same thread count. One training step is forward, backward (``epsilon_mse``) and fused AdamW
(as ``dit.train`` does), attention backend "auto". The target: the largest size reaches at least 40%
of the matmul FLOP/s. Achieved FLOP/s uses the analytic count of every
matrix product in the step (``dit.flops.forward_flops_per_clip``: ``3 * forward`` minus the input
gradients the first layers do not need) and, for comparison, the paper's ``C_token * tokens``. The table
printed at the end gives tokens/s and both FLOP/s as a ratio to the matmul baseline.
"""

from __future__ import annotations

import statistics

from pathlib import Path

import pytest
import torch
import yaml

from dit.diffusion import NoiseSchedule, epsilon_mse
from dit.flops import TIMESTEP_FREQUENCY_DIM, paper_flops_per_token
from dit.latent import latent_shape
from dit.model import VideoDiT, VideoDiTConfig

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
MATMUL_SIZE = 1024
_DEFAULT = yaml.safe_load((Path(__file__).resolve().parent.parent / "config" / "config.yaml").read_text())
_PREPARE = _DEFAULT["data"]["prepare"]
_LATENT = _DEFAULT["data"].get("latent")


def _model_clip() -> dict:
    """The model-space clip the default trains on: the latent video when ``data.latent`` is set
    (``channels`` x frames/pt x height/ph x width/pw), else the prepared RGB pixels."""
    channels, frames, height, width = 3, _PREPARE["frames"], _PREPARE["height"], _PREPARE["width"]
    if _LATENT:
        channels, frames, height, width = latent_shape(_LATENT["patch"], _LATENT["channels"], frames, height, width)
    return dict(in_channels=channels, clip_frames=frames, clip_height=height, clip_width=width,
                patch=tuple(_DEFAULT["model"]["patch"]))


CLIP = _model_clip()
BATCH_CLIPS = sorted(_DEFAULT["grid"]["batch_clips"])[len(_DEFAULT["grid"]["batch_clips"]) // 2]
SIZES = [*_DEFAULT["grid"]["sizes"][-2:], *_DEFAULT["heldout"]["sizes"]]
THREADS = _DEFAULT["training"]["threads"]
TARGET_FRACTION_OF_MATMUL = 0.40
if DEVICE.type == "cpu" and THREADS:
    torch.set_num_threads(THREADS)

_results: dict[str, dict] = {}


def _synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _median_seconds(benchmark) -> float:
    return statistics.median(benchmark.stats.stats.data)


def _summary_lines() -> list[str]:
    baseline = _results.get("matmul")
    lines = ["", f"training-step throughput on {DEVICE} ({torch.get_num_threads()} threads, torch {torch.__version__})"]
    if baseline is not None:
        lines.append(f"fp32 torch.mm {MATMUL_SIZE}x{MATMUL_SIZE}: {baseline['flops_per_s'] / 1e9:.1f} GFLOP/s (baseline)")
    lines.append(
        f"{'size':<11}{'N':>10}{'tokens/s':>11}{'GFLOP/s':>9}{'/matmul':>9}{'paper GFLOP/s':>15}{'/matmul':>9}"
    )
    for size in SIZES:
        result = _results.get(size)
        if result is None:
            continue
        ratio = (lambda flops: f"{flops / baseline['flops_per_s']:>9.3f}") if baseline else (lambda flops: f"{'-':>9}")
        lines.append(
            f"{size:<11}{result['N']:>10}{result['tokens_per_s']:>11.0f}{result['flops_per_s'] / 1e9:>9.2f}"
            f"{ratio(result['flops_per_s'])}{result['paper_flops_per_s'] / 1e9:>15.2f}{ratio(result['paper_flops_per_s'])}"
        )
    largest = _results.get(SIZES[-1])
    if baseline is not None and largest is not None:
        fraction = largest["flops_per_s"] / baseline["flops_per_s"]
        verdict = "meets" if fraction >= TARGET_FRACTION_OF_MATMUL else "MISSES"
        lines.append(
            f"largest size the default trains, {SIZES[-1]}: {fraction:.2f} of matmul FLOP/s "
            f"({verdict} the {TARGET_FRACTION_OF_MATMUL:.0%} target)"
        )
    return lines


class _SummaryPlugin:
    def pytest_terminal_summary(self, terminalreporter):
        if _results:
            for line in _summary_lines():
                terminalreporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def summary_table(request):
    name = "bench-model-flops-summary"
    if not request.config.pluginmanager.has_plugin(name):
        request.config.pluginmanager.register(_SummaryPlugin(), name)
    yield


def test_matmul_baseline(benchmark):
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=generator).to(DEVICE) for _ in range(2))

    def multiply():
        torch.mm(a, b)
        _synchronize()

    benchmark.extra_info.update(size=MATMUL_SIZE, dtype="float32", device=str(DEVICE), threads=torch.get_num_threads())
    benchmark.pedantic(multiply, rounds=20, iterations=1, warmup_rounds=2)
    _results["matmul"] = {"flops_per_s": 2 * MATMUL_SIZE**3 / _median_seconds(benchmark)}


@pytest.mark.parametrize("size", SIZES)
def test_training_step_throughput(benchmark, size):
    torch.manual_seed(0)
    config = VideoDiTConfig.from_size(size, **CLIP)
    model = VideoDiT(config).to(DEVICE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    schedule = NoiseSchedule()
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(BATCH_CLIPS, config.in_channels, config.clip_frames, config.clip_height, config.clip_width,
                    generator=generator)
    x0 = (x0 * 2 - 1).to(DEVICE)
    noise = torch.randn(x0.shape, generator=generator).to(DEVICE)
    timesteps = torch.randint(0, 1000, (BATCH_CLIPS,), generator=generator).to(DEVICE)
    ids = torch.randint(2, config.vocab_size, (BATCH_CLIPS, config.caption_length), generator=generator)
    ids[:, 0] = 1
    ids[:, 12:] = 0
    ids = ids.to(DEVICE)

    def step():
        loss = epsilon_mse(model, schedule, x0, timesteps, noise, ids).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _synchronize()

    forward = config.forward_flops()
    n, d = config.tokens_per_clip, config.width
    step_flops = BATCH_CLIPS * (3 * forward.total - 2 * n * config.patch_dim * d - 2 * TIMESTEP_FREQUENCY_DIM * d)
    tokens = BATCH_CLIPS * n
    paper_step_flops = paper_flops_per_token(model.non_embedding_parameters(), n, d) * tokens
    benchmark.extra_info.update(
        size=size, tokens_per_step=tokens, step_flops=step_flops, paper_step_flops=paper_step_flops,
        device=str(DEVICE), threads=torch.get_num_threads(), attention="auto",
    )
    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    seconds = _median_seconds(benchmark)
    _results[size] = {
        "N": model.non_embedding_parameters(),
        "tokens_per_s": tokens / seconds,
        "flops_per_s": step_flops / seconds,
        "paper_flops_per_s": paper_step_flops / seconds,
    }
