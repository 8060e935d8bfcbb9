"""Member-steps per second: runs trained alone against runs trained as one ensemble, at each default size.

Run: ``.venv/bin/python -m pytest benchmarks/bench_ensemble.py --benchmark-only -q``
(under a minute on a 2-core CPU). ``scripts/gpu-check.sh`` runs ``-k tiny-18k`` on CUDA.

For each fitting size of the embedded default (``config/config.yaml``), at the grid's middle batch
and with the members the default puts in one training job (its learning rates times the seeds of
that (size, batch) group, ``pipeline.runs.training_jobs``), three training steps are timed in turns in
one process (inputs built outside the timed calls, a device sync at the end of each call):

* ``before``: one run's step as ``dit.train`` took it at commit f1962f2: the tiny sizes' former heads
  (head dim 8 or 16), a learned caption table as wide as the model, ``VideoDiT`` with
  ``torch.optim.AdamW(fused=True)`` and ``torch.nn.utils.clip_grad_norm_`` at the config's clip;
* ``solo``: the engine's step (``harness.engine_training_step``) for one run, an ensemble of one;
* ``ensemble``: the engine's step for all M members of the job.

Member-steps per second: 1 / median seconds for ``before`` and ``solo``, M / median seconds for
``ensemble``. The table at the end gives them and the ratios ensemble/before and ensemble/solo, and
says whether tiny-18k reaches the target of 6x ``before`` (reported, never asserted: timings on a
shared machine are noisy). CPU threads: those of one training job (``training.threads``); bf16
autocast on CUDA, fp32 on a CPU.

``test_ensemble_member_scaling`` asks how far more members per job could go. At each fitting size and
the grid's smallest batch (1 clip per member, where most of the grid's optima and job seconds lie), it
times in turns the engine's step for k x M members (k = 1, 2, 4; M: the members of that size's job at
that batch) and the matmul baseline (``harness.matmul_baseline``). A least-squares line through the
three medians splits a step into a fixed part (per step, whatever the members) and a part per member;
the model FLOP/s of M members and of the line's limit (the FLOPs of one member-step over the time per
member) are given as fractions of the matmul rate. The limit bounds what packing more runs into a
job can reach at that width.

``test_size_independent_activations`` prices ``dit.model.size_independent`` (SiLU computed on a tensor padded to
whole vectors, so that a run's bits do not depend on its ensemble's size): at each fitting size and the grid's
smallest batch, with the members of that job, the engine's step as it is against the same step with the plain
``F.silu``, timed in turns.

``test_member_optimizer_against_torch_adamw`` times the optimizer step alone, at the same members and
parameter count (gradient clipping included): ``MemberAdamW`` (fused AdamW's kernel, one call per
learning rate) against ``torch.optim.AdamW(fused=True)`` with one param group per member row, the
engine's optimizer before a06e4bf; both give the same bits (``tests/test_ensemble.py``).
"""

from __future__ import annotations

import contextlib

import pytest
import torch

import dit.model
from dit.diffusion import epsilon_mse
from dit.ensemble import EnsembleDiT
from dit.member_training import MemberAdamW, MemberParameters
from dit.model import VideoDiT, VideoDiTConfig
from dit.text import PAD_ID
from harness import (
    DEVICE,
    FORMER_TINY_HEADS,
    Experiment,
    InterleavedTimer,
    caption_ids,
    engine_training_step,
    matmul_baseline,
    run_context,
    training_dtype,
)

DEFAULT = Experiment.load("config")
BATCH_CLIPS = DEFAULT.middle_batch_clips
TARGET_SIZE, TARGET_RATIO = "tiny-18k", 6.0
ROUNDS, WARMUP_ROUNDS = 20, 3

SCALING_FACTORS = (1, 2, 4)

_results: dict[str, dict] = {}
_optimizer_results: dict[str, dict] = {}
_activation_results: dict[str, dict] = {}
_scaling_results: dict[str, dict] = {}


def former_solo_step(config: VideoDiTConfig, learning_rate: float, batch_clips: int, seed: int = 0):
    """One run's training step as at f1962f2 (``VideoDiT``, fused AdamW, ``clip_grad_norm_``); a callable."""
    torch.manual_seed(seed)
    model = VideoDiT(config).to(DEVICE)
    opt = DEFAULT.optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=tuple(opt["betas"]), eps=opt["eps"],
                                  weight_decay=opt["weight_decay"], fused=True)
    schedule = DEFAULT.schedule
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_clips, config.in_channels, config.clip_frames, config.clip_height, config.clip_width)
    video = (torch.rand(shape, generator=generator) * 2 - 1).to(DEVICE)
    noise = torch.randn(shape, generator=generator).to(DEVICE)
    timesteps = torch.randint(0, schedule.num_timesteps, (batch_clips,), generator=generator).to(DEVICE)
    ids = caption_ids((batch_clips,), config.vocab_size, config.caption_length, generator).to(DEVICE)
    bf16 = training_dtype(DEVICE) == torch.bfloat16
    autocast = torch.autocast(DEVICE.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def run() -> None:
        with autocast:
            losses = epsilon_mse(model, schedule, video, timesteps, noise, caption_ids=ids, caption_mask=ids != PAD_ID)
        (losses.float().sum() / batch_clips).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), opt["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def summary_lines() -> list[str]:
    return member_steps_summary_lines() + scaling_summary_lines() + optimizer_summary_lines() + activation_summary_lines()


def _table(results: dict[str, dict], title, header: str, row) -> list[str]:
    """A summary table: a blank line, ``title(first result)``, ``header``, then ``row(size, result)`` per size."""
    if not results:
        return []
    return ["", title(next(iter(results.values()))), header, *(row(size, r) for size, r in results.items())]


def member_steps_summary_lines() -> list[str]:
    lines = _table(
        _results,
        lambda first: f"member-steps/s on {DEVICE} ({first['dtype']}, {first['threads']} threads, torch {torch.__version__}), "
                      f"batch {BATCH_CLIPS} clips per member; medians of {ROUNDS} interleaved rounds",
        f"{'size':<10}{'M':>3}{'before ms':>11}{'solo ms':>9}{'ensemble ms':>13}{'before/s':>10}{'solo/s':>9}"
        f"{'ensemble/s':>12}{'ens/before':>12}{'ens/solo':>10}",
        lambda size, r: f"{size:<10}{r['members']:>3}{r['before']['median_s'] * 1e3:>11.2f}{r['solo']['median_s'] * 1e3:>9.2f}"
                        f"{r['ensemble']['median_s'] * 1e3:>13.2f}{r['before_member_steps_per_s']:>10.1f}"
                        f"{r['solo_member_steps_per_s']:>9.1f}{r['ensemble_member_steps_per_s']:>12.1f}"
                        f"{r['ensemble_over_before']:>12.2f}{r['ensemble_over_solo']:>10.2f}")
    target = _results.get(TARGET_SIZE)
    if target is not None:
        verdict = "meets" if target["meets_target"] else "MISSES"
        lines.append(f"{TARGET_SIZE}: ensemble {target['ensemble_over_before']:.2f}x the member-steps/s of before "
                     f"({verdict} the {TARGET_RATIO:g}x target)")
    return lines


def _milliseconds(points: list[dict]) -> str:
    return ", ".join(f"{point['median_s'] * 1e3:.2f}" for point in points)


def scaling_summary_lines() -> list[str]:
    return _table(
        _scaling_results,
        lambda first: f"step time against members at {first['batch_clips']} clip(s) per member ({first['dtype']}, "
                      f"{first['threads']} threads); medians of {ROUNDS} interleaved rounds with a {first['matmul_size']}^2 "
                      "torch.mm; line: seconds = fixed + per member x members",
        f"{'size':<10}{'M':>4}{'ms at M, 2M, 4M':>24}{'fixed ms':>10}{'per member ms':>15}{'matmul GFLOP/s':>16}"
        f"{'fraction at M':>15}{'limit':>7}",
        lambda size, r: f"{size:<10}{r['members']:>4}{_milliseconds(r['points']):>24}{r['fixed_s'] * 1e3:>10.2f}"
                        f"{r['per_member_s'] * 1e3:>15.3f}{r['matmul_flops_per_s'] / 1e9:>16.1f}"
                        f"{r['fraction_at_job_members']:>15.3f}{r['fraction_limit']:>7.3f}")


def optimizer_summary_lines() -> list[str]:
    return _table(
        _optimizer_results,
        lambda first: f"optimizer step (gradient clipping included), medians of {ROUNDS} interleaved rounds",
        f"{'size':<10}{'M':>3}{'parameters':>12}{'rates':>6}{'torch AdamW ms':>16}{'MemberAdamW ms':>16}{'ratio':>7}",
        lambda size, r: f"{size:<10}{r['members']:>3}{r['parameters_per_member']:>12,}{r['learning_rates']:>6}"
                        f"{r['torch_adamw']['median_s'] * 1e3:>16.3f}{r['member_adamw']['median_s'] * 1e3:>16.3f}"
                        f"{r['torch_adamw_over_member_adamw']:>7.2f}")


def activation_summary_lines() -> list[str]:
    return _table(
        _activation_results,
        lambda first: f"training step with the size-independent SiLU against plain F.silu, {first['batch_clips']} "
                      f"clip(s) per member; medians of {ROUNDS} interleaved rounds",
        f"{'size':<10}{'M':>3}{'plain ms':>10}{'size-independent ms':>21}{'ratio':>7}",
        lambda size, r: f"{size:<10}{r['members']:>3}{r['plain']['median_s'] * 1e3:>10.2f}"
                        f"{r['size_independent']['median_s'] * 1e3:>21.2f}{r['size_independent_over_plain']:>7.3f}")


@contextlib.contextmanager
def plain_activations():
    """The model's SiLU as ``F.silu`` on the tensor as it is (before 95bcce9)."""
    saved = dit.model.size_independent
    dit.model.size_independent = lambda function, x: function(x)
    try:
        yield
    finally:
        dit.model.size_independent = saved


@pytest.mark.parametrize("size", DEFAULT.sizes)
def test_size_independent_activations(benchmark, training_threads, size):
    batch_clips = DEFAULT.smallest_batch_clips
    learning_rates = DEFAULT.job_learning_rates(size, batch_clips)
    members = len(learning_rates)
    config = DEFAULT.model_config(size)
    padded = engine_training_step(DEFAULT, config, learning_rates, batch_clips).run
    plain = engine_training_step(DEFAULT, config, learning_rates, batch_clips).run

    def plain_step() -> None:
        with plain_activations():
            plain()

    timer = InterleavedTimer({"plain": plain_step, "size_independent": padded}, DEVICE)
    timer.warm_up(WARMUP_ROUNDS)
    benchmark.extra_info.update(run_context(DEVICE, training_dtype(DEVICE), batch_clips, DEFAULT.clip, config.attention,
                                            members=members))
    benchmark.pedantic(timer.round, rounds=ROUNDS, iterations=1)
    spreads = timer.spreads()
    result = {"size": size, "members": members, "batch_clips": batch_clips, **spreads,
              "size_independent_over_plain": spreads["size_independent"]["median_s"] / spreads["plain"]["median_s"]}
    benchmark.extra_info.update(result)
    _activation_results[size] = result


@pytest.mark.parametrize("size", DEFAULT.sizes)
def test_solo_against_ensemble_member_steps(benchmark, training_threads, size):
    learning_rates = DEFAULT.job_learning_rates(size, BATCH_CLIPS)
    members = len(learning_rates)
    former = DEFAULT.model_config(size, heads=FORMER_TINY_HEADS[size], caption_table="learned", text_width=None)
    config = DEFAULT.model_config(size)
    timer = InterleavedTimer({
        "before": former_solo_step(former, learning_rates[0], BATCH_CLIPS),
        "solo": engine_training_step(DEFAULT, config, learning_rates[:1], BATCH_CLIPS).run,
        "ensemble": engine_training_step(DEFAULT, config, learning_rates, BATCH_CLIPS).run,
    }, DEVICE)
    timer.warm_up(WARMUP_ROUNDS)
    dtype = training_dtype(DEVICE)
    benchmark.extra_info.update(run_context(DEVICE, dtype, BATCH_CLIPS, DEFAULT.clip, config.attention, members=members))
    benchmark.pedantic(timer.round, rounds=ROUNDS, iterations=1)
    spreads = timer.spreads()
    rates = {"before": 1 / spreads["before"]["median_s"], "solo": 1 / spreads["solo"]["median_s"],
             "ensemble": members / spreads["ensemble"]["median_s"]}
    result = {
        "size": size, "members": members, "learning_rates": learning_rates, "former_heads": former.heads,
        "heads": config.heads, **spreads, **{f"{name}_member_steps_per_s": rate for name, rate in rates.items()},
        "ensemble_over_before": rates["ensemble"] / rates["before"], "ensemble_over_solo": rates["ensemble"] / rates["solo"],
        "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
    }
    if size == TARGET_SIZE:
        result.update(target_ratio=TARGET_RATIO, meets_target=result["ensemble_over_before"] >= TARGET_RATIO)
    benchmark.extra_info.update(result)
    _results[size] = result


def fit_line(members: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least-squares ``seconds = fixed + per_member * members``; returns ``(fixed, per_member)`` in seconds."""
    x, y = torch.tensor(members, dtype=torch.float64), torch.tensor(seconds, dtype=torch.float64)
    design = torch.stack([torch.ones_like(x), x], dim=1)
    fixed, per_member = torch.linalg.lstsq(design, y[:, None]).solution[:, 0].tolist()
    return fixed, per_member


@pytest.mark.parametrize("size", DEFAULT.sizes)
def test_ensemble_member_scaling(benchmark, training_threads, size):
    batch_clips = DEFAULT.smallest_batch_clips
    learning_rates = DEFAULT.job_learning_rates(size, batch_clips)
    members = len(learning_rates)
    config = DEFAULT.model_config(size)
    dtype = training_dtype(DEVICE)
    steps = {k * members: engine_training_step(DEFAULT, config, learning_rates * k, batch_clips) for k in SCALING_FACTORS}
    baseline = matmul_baseline(DEVICE, dtype)
    timer = InterleavedTimer({**{f"members={m}": step.run for m, step in steps.items()}, "matmul": baseline.run}, DEVICE)
    timer.warm_up(WARMUP_ROUNDS)
    benchmark.extra_info.update(run_context(DEVICE, dtype, batch_clips, DEFAULT.clip, config.attention, members=members))
    benchmark.pedantic(timer.round, rounds=ROUNDS, iterations=1)
    spreads = timer.spreads()
    matmul_rate = baseline.flops / spreads["matmul"]["median_s"]
    points = [{"members": m, **spreads[f"members={m}"], "flops": step.flops} for m, step in steps.items()]
    fixed, per_member = fit_line([p["members"] for p in points], [p["median_s"] for p in points])
    member_flops = steps[members].flops / members
    result = {
        "size": size, "members": members, "batch_clips": batch_clips, "points": points, "fixed_s": fixed,
        "per_member_s": per_member, "member_step_flops": member_flops, "matmul_flops_per_s": matmul_rate,
        "matmul_size": baseline.size, "matmul_spread": spreads["matmul"],
        "fraction_at_job_members": steps[members].flops / points[0]["median_s"] / matmul_rate,
        "fraction_limit": member_flops / per_member / matmul_rate,
        "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
    }
    benchmark.extra_info.update(result)
    _scaling_results[size] = result


def torch_adamw_step(parameters: MemberParameters, learning_rates: list[float], max_norm: float | None):
    """The engine's optimizer step before a06e4bf: ``torch.optim.AdamW(fused=True)``, one param group per member row."""
    opt = DEFAULT.optimizer
    rows = [torch.nn.Parameter(parameters.values[m]) for m in range(parameters.members)]
    optimizer = torch.optim.AdamW([{"params": [row]} for row in rows], lr=0.0, betas=tuple(opt["betas"]), eps=opt["eps"],
                                  weight_decay=opt["weight_decay"], fused=True)

    def run() -> None:
        if max_norm is not None:
            parameters.clip_grads_(max_norm)
        for member, (group, row) in enumerate(zip(optimizer.param_groups, rows, strict=True)):
            group["lr"] = learning_rates[member]
            row.grad = parameters.grads[member]
        optimizer.step()

    return run


@pytest.mark.parametrize("size", DEFAULT.sizes)
def test_member_optimizer_against_torch_adamw(benchmark, training_threads, size):
    learning_rates = DEFAULT.job_learning_rates(size, BATCH_CLIPS)
    members = len(learning_rates)
    config = DEFAULT.model_config(size)
    variants = {}
    for name in ("torch_adamw", "member_adamw"):
        torch.manual_seed(0)
        model = EnsembleDiT.from_members(config, [VideoDiT(config) for _ in range(members)]).to(DEVICE)
        parameters = MemberParameters(model, members)
        parameters.grads.copy_(torch.randn(parameters.grads.shape, generator=torch.Generator().manual_seed(1)))
        max_norm = DEFAULT.optimizer.get("grad_clip")
        if name == "torch_adamw":
            variants[name] = torch_adamw_step(parameters, learning_rates, max_norm)
        else:
            opt = DEFAULT.optimizer
            optimizer = MemberAdamW(parameters, betas=tuple(opt["betas"]), eps=opt["eps"], weight_decay=opt["weight_decay"])
            variants[name] = (lambda o=optimizer: o.step(learning_rates, [True] * members, max_norm))
    timer = InterleavedTimer(variants, DEVICE)
    timer.warm_up(WARMUP_ROUNDS)
    benchmark.extra_info.update(run_context(DEVICE, torch.float32, BATCH_CLIPS, DEFAULT.clip, config.attention,
                                            members=members))
    benchmark.pedantic(timer.round, rounds=ROUNDS, iterations=1)
    spreads = timer.spreads()
    result = {"size": size, "members": members, "parameters_per_member": parameters.values.shape[1],
              "learning_rates": len(set(learning_rates)), **spreads,
              "torch_adamw_over_member_adamw": spreads["torch_adamw"]["median_s"] / spreads["member_adamw"]["median_s"]}
    benchmark.extra_info.update(result)
    _optimizer_results[size] = result
