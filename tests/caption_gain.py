"""The caption-gain run of tests/test_evaluate.py's slow check, made in a background process.

``command(folder)`` generates and prepares the data and trains the run (``python -m dit.train`` through
``dit.train.main``) in one process of its own, into ``folder/run``. The session fixture
``caption_gain_run`` (tests/conftest.py) starts it in the background when first asked for, by the caption check,
which tests/conftest.py orders first after the pipeline group (under pytest-xdist the check runs on a
worker of its own while the pipeline group's SLURM tests wait on theirs).
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

#: Settings found to show the caption gain within about 90 s on 2 CPU cores (measured: 1,500 steps in
#: about 58 s; null-caption loss 0.0549 vs 0.0519 with captions, a gain of 0.0030 against a protocol
#: spread of 0.00016 over 4 noise seeds). The model's width must reach the tubelet's 96 values
#: (2x4x4 patches of RGB): tiny-147k and tiny-262k, narrower, spend their capacity on passing the noise
#: through and showed no gain at all over the same steps. With the default linear schedule
#: (beta 1e-4 .. 0.02) the gain also stayed at 0; with beta 0.002 .. 0.02 it appears after about
#: 1,000 steps, mostly at the two lowest validation timesteps (t = 62 and 187); 700 steps at a learning
#: rate of 6e-3 showed none.
CAPTION_GAIN_DATA = {"clips": 1000, "frames": 2, "min_objects": 1, "max_objects": 1, "validation_fraction": 0.2}
CAPTION_GAIN_RUN = {
    "seed": 7,
    "threads": 1,
    "model": {"size": "tiny-590k", "patch": [2, 4, 4], "attention": "sdpa", "caption_dropout": 0.1},
    "optimizer": {"lr": 3e-3, "warmup_steps": 5},
    "batch": {"global_clips": 16},
    "schedule": {"milestones_tokens": [384_000]},  # 16 tokens per clip: 1,500 steps of 16 clips
    "diffusion": {"beta_schedule": "linear", "beta_start": 0.002, "beta_end": 0.02},
    "validation": {"timesteps": 8, "batch_clips": 100, "max_clips": 200},
    "progress": {"quiet": True},
}


def make_run(folder: Path) -> int:
    """Data into ``folder/data``, the trained run into ``folder/run``; returns dit.train's exit code."""
    from prepared_clips import prepare_clips
    from training_runs import train_in_process

    data = prepare_clips(folder / "data", **CAPTION_GAIN_DATA)
    return train_in_process({**CAPTION_GAIN_RUN, "data": {"root": str(data)}}, folder / "run")


def command(folder: Path) -> list[str]:
    """The command that runs ``make_run(folder)`` in a process of its own (``conftest.BackgroundCommand`` starts it)."""
    code = (f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(TESTS.parent)!r}]; from caption_gain import make_run; "
            "sys.exit(make_run(__import__('pathlib').Path(sys.argv[1])))")
    return [sys.executable, "-c", code, str(folder)]
