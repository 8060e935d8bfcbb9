"""What the benchmark suites build, checked where a test runs it (benchmarks/ is not part of the test command):
the configs as the pipeline reads them, each bench_ensemble step at every default size, the training job
file of bench_distributed and bench_data's two ways of building a step's inputs. A size or a config key added
to the default cannot break a benchmark unseen."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.append(str(BENCHMARKS))

import bench_distributed  # noqa: E402
import bench_ensemble  # noqa: E402
from harness import FORMER_TINY_HEADS, Experiment, engine_training_step, torch_threads  # noqa: E402

from dit.config import check_ensemble, load_ensemble  # noqa: E402
from pipeline.runs import ensemble_config, grid_runs, training_jobs  # noqa: E402

DEFAULT = Experiment.load("config")


@pytest.mark.parametrize("size", DEFAULT.sizes)
def test_bench_ensemble_steps_train_at_every_default_size(size):
    """One step of each variant ``bench_ensemble`` times (before, solo, ensemble) at one clip per member:
    the ``before`` step's former heads exist for the size and split its width into heads of 8 to 16
    channels (the rule before f1962f2), and every variant changes its weights."""
    heads = FORMER_TINY_HEADS[size]
    width = DEFAULT.model_config(size).width
    assert width % heads == 0 and 8 <= width // heads <= 16, (size, width, heads)
    learning_rates = DEFAULT.job_learning_rates(size, DEFAULT.middle_batch_clips)
    former = DEFAULT.model_config(size, heads=heads, caption_table="learned", text_width=None)
    config = DEFAULT.model_config(size)
    with torch_threads(1):
        before = bench_ensemble.former_solo_step(former, learning_rates[0], batch_clips=1)
        model = next(cell.cell_contents for cell in before.__closure__ if isinstance(cell.cell_contents, torch.nn.Module))
        weights = [p.detach().clone() for p in model.parameters()]
        before()
        assert any(not torch.equal(w, p) for w, p in zip(weights, model.parameters(), strict=True))
        for rates in (learning_rates[:1], learning_rates):
            step = engine_training_step(DEFAULT, config, rates, batch_clips=1)
            assert step.members == len(rates) and step.flops > 0
            step.run()


def test_bench_ensemble_plain_activations_are_the_plain_kernels_and_are_restored():
    """``bench_ensemble.plain_activations`` (the baseline ``test_size_independent_activations`` times) gives the model's
    SiLU as ``F.silu`` on the tensor as it is, which rounds a 24-element tensor's values (all in the kernel's scalar
    rest) otherwise than the size-independent SiLU; on leaving, the model's own is back."""
    import torch.nn.functional as F

    from dit.model import SiLU

    values = torch.randn(50, 24, generator=torch.Generator().manual_seed(0))
    module = SiLU()
    own = [module(row) for row in values]
    with bench_ensemble.plain_activations():
        plain = [module(row) for row in values]
    assert all(torch.equal(p, F.silu(row)) for p, row in zip(plain, values, strict=True))
    assert any(not torch.equal(p, o) for p, o in zip(plain, own, strict=True))
    assert all(torch.equal(module(row), o) for row, o in zip(values, own, strict=True))


def test_bench_ensemble_optimizer_baseline_does_the_engines_update():
    """``bench_ensemble``'s optimizer baseline (``torch.optim.AdamW``, one param group per member) and the engine's
    ``MemberAdamW`` move the same parameters from the same gradients to the same bits: the benchmark times equal work."""
    from dit.member_training import MemberAdamW, MemberParameters
    from dit.ensemble import EnsembleDiT
    from dit.model import VideoDiT

    size = DEFAULT.sizes[0]
    rates = DEFAULT.job_learning_rates(size, DEFAULT.middle_batch_clips)
    config, opt = DEFAULT.model_config(size), DEFAULT.optimizer
    moved = []
    for variant in ("baseline", "engine"):
        torch.manual_seed(0)
        parameters = MemberParameters(EnsembleDiT.from_members(config, [VideoDiT(config) for _ in rates]), len(rates))
        start = parameters.values.clone()
        if variant == "baseline":
            step_all = bench_ensemble.torch_adamw_step(parameters, rates, opt["grad_clip"])
        else:
            optimizer = MemberAdamW(parameters, betas=tuple(opt["betas"]), eps=opt["eps"], weight_decay=opt["weight_decay"])
            step_all = lambda: optimizer.step(rates, [True] * len(rates), opt["grad_clip"])  # noqa: E731
        for step in range(3):
            parameters.grads.copy_(torch.randn(parameters.grads.shape, generator=torch.Generator().manual_seed(step)))
            step_all()
        assert not torch.equal(parameters.values, start)
        moved.append(parameters.values)
    assert torch.equal(*moved)


@pytest.mark.parametrize("name", ["config", "paper", "smoke", "test"])  # config/seed-1.yaml is an overlay of config.yaml
def test_every_training_job_of_an_experiment_builds_a_file_dit_train_reads(name, tmp_path):
    """An Experiment's config goes through pipeline.runs as the pipeline's does (a raw YAML read lacked the
    schema's defaults, e.g. model.frames): every grid job's ensemble file is one that dit.train accepts."""
    experiment = Experiment.load(name)
    jobs = training_jobs(grid_runs(experiment.config), experiment.config["training"]["ensemble"])
    assert jobs
    for job in jobs:
        path = tmp_path / "job.yaml"
        path.write_text(yaml.safe_dump(ensemble_config(experiment.config, job, str(tmp_path / "runs"), str(tmp_path / "data"))))
        loaded = load_ensemble(path)
        check_ensemble([config for config, _ in loaded])
        assert [config.optimizer.lr for config, _ in loaded] == [run.learning_rate for run in job.runs]


def test_bench_distributed_writes_the_default_job_as_a_training_ensemble_file(tmp_path):
    """The job file bench_distributed trains: the default's (size, batch) job, its members' runs shortened to the
    benchmark's steps, and a file that dit.train's own reader accepts as one ensemble."""
    path, members = bench_distributed._job_file(tmp_path, "job", tmp_path / "prepared", tmp_path / "codec.npz", threads=1)
    loaded = load_ensemble(path)
    check_ensemble([config for config, _ in loaded])
    assert members == len(loaded) == len(DEFAULT.job_learning_rates(bench_distributed.SIZE, bench_distributed.BATCH_CLIPS))
    tokens = bench_distributed.STEPS * bench_distributed.BATCH_CLIPS * DEFAULT.model_config(bench_distributed.SIZE).tokens_per_clip
    for config, out in loaded:
        assert config.schedule.milestones_tokens[-1] == tokens and config.model.size == bench_distributed.SIZE
        assert config.batch.global_clips == bench_distributed.BATCH_CLIPS and tmp_path / "job" / "runs" in out.parents


def test_the_gpu_report_digests_ensemble_records_and_leaves_the_optimizer_records_out():
    """``bench_ensemble``'s JSON holds member-steps records and optimizer records; the GPU report's ensemble rows
    come from the first kind only (an optimizer record has no member-steps to print)."""
    import gpu_check_report

    steps = {"size": "tiny-18k", "members": 20, "before_member_steps_per_s": 100.0, "solo_member_steps_per_s": 120.0,
             "ensemble_member_steps_per_s": 700.0, "ensemble_over_before": 7.0, "ensemble_over_solo": 700.0 / 120.0,
             "meets_target": True}
    optimizer = {"size": "tiny-18k", "members": 20, "torch_adamw_over_member_adamw": 1.7}
    rows = gpu_check_report.ensemble_digest([{"extra_info": steps}, {"extra_info": optimizer}])
    assert rows == [steps]


def test_bench_data_step_inputs_variants_build_the_same_tensors(tmp_path):
    """The step-inputs benchmark times equal work: the encoded-split and per-batch trainers build the same inputs."""
    from bench_data import step_inputs_trainers

    threads = torch.get_num_threads()
    try:
        trainers, context = step_inputs_trainers(tmp_path, clips=24)
    finally:
        torch.set_num_threads(threads)
    assert context["members"] == len(trainers["encoded"].members) > 3 and context["seeds"] > 1
    for step in range(30):  # past an epoch of the 22 or so training clips
        for mine, former in zip(trainers["encoded"].step_inputs(step), trainers["per_batch"].step_inputs(step)):
            assert torch.equal(mine, former)


def test_bench_ensemble_scaling_line_matches_numpy_polyfit():
    """The member-scaling benchmark splits a step into fixed and per-member seconds by least squares; the split
    equals numpy's degree-1 fit of the same points (and recovers an exact line)."""
    import numpy as np

    members, seconds = [18, 36, 72], [0.0078, 0.0123, 0.0219]
    fixed, per_member = bench_ensemble.fit_line(members, seconds)
    slope, intercept = np.polyfit(members, seconds, 1)
    assert fixed == pytest.approx(intercept, rel=1e-9) and per_member == pytest.approx(slope, rel=1e-9)
    assert bench_ensemble.fit_line([1, 2, 4], [1.5 + 0.25 * m for m in (1, 2, 4)]) == pytest.approx((1.5, 0.25))


def test_no_benchmark_module_changes_thread_counts_on_import():
    """Importing every benchmark module (as ``pytest benchmarks/`` does) leaves torch's threads, OPENBLAS_NUM_THREADS
    and every loaded OpenBLAS's thread count as they were; bench_analysis's fits take one thread within its tests."""
    import subprocess

    script = f"""
import json, os, sys
sys.path.insert(0, {str(BENCHMARKS)!r})
import numpy, scipy.linalg, torch
from analysis.blas import one_openblas_thread, openblas_threads
def state():
    return [torch.get_num_threads(), os.environ.get("OPENBLAS_NUM_THREADS"), openblas_threads()]
before = state()
import bench_analysis, bench_attention, bench_data, bench_distributed, bench_ensemble, bench_model_flops
after = state()
with one_openblas_thread():
    inside = state()
print(json.dumps([before, after, inside, state()]))
"""
    environment = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                            cwd=BENCHMARKS.parent, check=True)
    before, after, inside, restored = json.loads(result.stdout.strip().splitlines()[-1])
    assert before == after == restored and before[1] is None
    assert inside[1] == "1" and set(inside[2].values()) == {1} and inside[2].keys() == before[2].keys()
