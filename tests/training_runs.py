"""The suite's tiny training run: its config, and ``dit.train`` run in this process or as a command.

``tiny_run_config(data)`` is a tiny-8k run in pixel space: 8 clips of 64 tokens per step, milestones
at 2,048, 4,096, 6,144 and 10,240 tokens (steps 4, 8, 12 and 20), a checkpoint every 3 steps.
``train_in_process`` calls ``dit.train.main`` here (no interpreter and torch start-up) and puts
torch's thread count back afterwards; ``train_command`` is the command line for tests that signal the
process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
TRAIN_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
LOSS_COLUMNS = ("milestone_tokens", "step", "tokens", "train_loss", "validation_loss")
TINY_MILESTONES = [2048, 4096, 6144, 10240]


def tiny_run_config(data: Path, **changes) -> dict:
    """The tiny run on ``data``; ``section={...}`` replaces a section, ``section__key=value`` one key."""
    config = {
        "seed": 7,
        "threads": 1,
        "model": {"size": "tiny-8k", "patch": [2, 4, 4], "attention": "sdpa"},
        "data": {"root": str(data)},
        "optimizer": {"lr": 3e-3, "warmup_steps": 2},
        "batch": {"global_clips": 8},
        "schedule": {"milestones_tokens": list(TINY_MILESTONES)},  # 64 tokens/clip, 512 tokens/step
        "validation": {"timesteps": 4, "batch_clips": 4},
        "checkpoint": {"every_steps": 3},
        "progress": {"interval_seconds": 0.2},
    }
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        if key:
            config.setdefault(section, {})[key] = value
        else:
            config[section] = value
    return config


def write_config(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def train_command(config_path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "dit.train", "--config", str(config_path), "--out", str(out)]


def train_in_process(config: dict, out: Path, *options: str) -> int:
    """``python -m dit.train --config OUT.yaml --out OUT [OPTIONS]`` as ``dit.train.main``; returns the exit code."""
    from dit.train import main

    config_path = write_config(out.parent / f"{out.name}.yaml", config)
    threads = torch.get_num_threads()
    try:
        return main(["--config", str(config_path), "--out", str(out), *options])
    finally:
        torch.set_num_threads(threads)


def read_metrics(out: Path) -> list[dict[str, str]]:
    import csv

    with open(out / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def loss_rows(out: Path) -> list[tuple[str, ...]]:
    return [tuple(row[c] for c in LOSS_COLUMNS) for row in read_metrics(out)]
