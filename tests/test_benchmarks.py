"""The benchmark suites' steps build and run at every size they time, so a size added to the default cannot
break a benchmark that only a benchmarker would run (benchmarks/ is not part of the test command)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.append(str(BENCHMARKS))

import bench_ensemble  # noqa: E402
from harness import FORMER_TINY_HEADS, Experiment, engine_training_step, torch_threads  # noqa: E402

DEFAULT = Experiment.load("config")


@pytest.mark.filterwarnings("ignore:grad and param do not obey the gradient layout contract")  # as benchmarks/conftest.py
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
