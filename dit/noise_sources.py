"""Where a cell's run-to-run noise comes from: initialisation seeds crossed with data seeds, as one ensemble.

A run's seed sets three things at once: its initialisation, its data order and its per-step draws
(timesteps, noise, caption dropout; ``dit.engine``). Two runs of one cell that differ in their seed
differ in all of them, and their validation losses differ by the run-to-run noise that the analysis
accounts for (``laws.json`` ``setup.noise``). This study separates the two sources:

* ``k`` initialisation seeds (rows) crossed with ``k`` data seeds (columns): ``k * k`` runs of one cell,
  trained together as one ensemble (``dit.engine.EnsembleTrainer``). Run ``(i, j)`` starts from the
  initialisation of seed ``first_seed + i`` and trains with the data order and draws of seed
  ``first_seed + j``; the diagonal runs are ordinary runs of seeds ``first_seed + i``.
* At every milestone, a two-way random-effects analysis of variance of the log validation losses (one
  observation per cell, so the interaction and the residual are one term) gives the relative variance
  of a run from its initialisation, from its data, and from their interaction:
  ``var_init = (MS_rows - MS_residual) / k`` (0 when negative), ``var_data`` from the columns alike,
  ``var_interaction = MS_residual``. Their sum is the relative variance between two runs whose seeds
  differ (``relative_std``). The diagonal's plain relative standard deviation is reported beside it.
* ``seeds_for`` gives the seeds per cell whose mean loss would have a relative standard deviation at
  most the target: ``ceil(relative_std**2 / target**2)``.

Logs make the deviations relative: a relative std of 0.01 is a 1% spread of the loss.

Run: ``python -m dit.noise_sources --ensemble work/jobs/grid/tiny-18k/b2/ensemble.yaml --learning-rate 5e-3
--seeds 3 --out noise_sources.json`` (the cell's member of a job file the pipeline wrote), or ``--config
RUN.yaml`` for one run's training config (``--config-json`` for the same as JSON text). ``snakemake --cores all
noise_sources`` runs it at every noise cell of the pipeline config (``noise.sources``). The job folder (``--work``, by default next to ``--out``)
keeps the ensemble's checkpoint, so a rerun after an interruption resumes; its member folders record
each run's data seed as its ``seed`` (their initialisations come from the row's seed, as the output says).
Bad options and output paths are refused before any training (``check_options``; exit status 2).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

from dit.atomic import OutputPathError, atomic_write_json, check_output_files, check_output_folder
from dit.config import ConfigError, TrainConfig, config_from_dict, load_config, load_ensemble, resumable_config_hash
from dit.engine import EnsembleTrainer, Member
from dit.model import VideoDiT
from dit.provenance import provenance
from dit.seeds import stable_seed

DEFAULT_TARGETS = (0.007, 0.005)


def design(base: TrainConfig, seeds: int, first_seed: int, work: Path) -> list[tuple[int, int, Member]]:
    """The ``seeds x seeds`` runs of ``base``'s cell: ``(init row, data column, member)``, rows outermost."""
    if seeds < 2:
        raise ConfigError(f"--seeds must be at least 2 (a k x k design needs k >= 2), got {seeds}")
    runs = []
    for row in range(seeds):
        for column in range(seeds):
            config = copy.deepcopy(base)
            config.seed = first_seed + column
            config.run.id = f"noise-sources/init{first_seed + row}_data{first_seed + column}"
            out = work / "runs" / f"init{first_seed + row}_data{first_seed + column}"
            runs.append((row, column, Member(config, out, resumable_config_hash(config))))
    return runs


def set_initialisations(trainer: EnsembleTrainer, rows: list[int], first_seed: int) -> None:
    """Member ``m`` starts from ``VideoDiT``'s initialisation of seed ``first_seed + rows[m]`` (and so does its EMA)."""
    for member, row in enumerate(rows):
        torch.manual_seed(stable_seed(first_seed + row, "model-init"))
        trainer.model.load_member(member, VideoDiT(trainer.model_config).state_dict())
    trainer.ema_values.copy_(trainer.parameters.values)


def decompose(log_losses: np.ndarray) -> dict:
    """Relative variance components of a ``(k, k)`` table of log losses (rows: initialisation, columns: data)."""
    k = log_losses.shape[0]
    grand = log_losses.mean()
    rows, columns = log_losses.mean(axis=1), log_losses.mean(axis=0)
    ms_rows = k * np.sum((rows - grand) ** 2) / (k - 1)
    ms_columns = k * np.sum((columns - grand) ** 2) / (k - 1)
    residual = log_losses - rows[:, None] - columns[None, :] + grand
    ms_residual = np.sum(residual**2) / (k - 1) ** 2
    components = {"initialisation": max(0.0, (ms_rows - ms_residual) / k),
                  "data": max(0.0, (ms_columns - ms_residual) / k), "interaction": float(ms_residual)}
    total = sum(components.values())
    return {"relative_variance": {name: float(value) for name, value in components.items()},
            "relative_std": math.sqrt(total),
            "share": {name: (value / total if total > 0 else None) for name, value in components.items()},
            "diagonal_relative_std": float(np.std(np.diag(log_losses), ddof=1)),
            "mean_loss": float(np.exp(grand))}


def seeds_for(relative_std: float, target: float) -> int:
    """Seeds per cell whose mean loss has a relative std of at most ``target``."""
    return max(1, math.ceil((relative_std / target) ** 2))


def study(base: TrainConfig, seeds: int, first_seed: int, work: Path, targets=DEFAULT_TARGETS) -> dict:
    """Train the design (or resume it) and decompose its noise at every milestone; the output document."""
    runs = design(base, seeds, first_seed, work)
    trainer = EnsembleTrainer([member for _, _, member in runs], work / "job")
    set_initialisations(trainer, [row for row, _, _ in runs], first_seed)
    try:
        statuses = trainer.run()
    finally:
        trainer.context.close()
    if any(status != "completed" for status in statuses):
        failed = [member.run_id for (_, _, member), status in zip(runs, statuses) if status != "completed"]
        raise RuntimeError(f"runs of the design did not complete: {failed} (see their summary.json under {work})")
    milestones = sorted(int(row["milestone_tokens"]) for row in runs[0][2].metrics)
    table = np.full((len(milestones), seeds, seeds), np.nan)
    for row, column, member in runs:
        for record in member.metrics:
            table[milestones.index(int(record["milestone_tokens"])), row, column] = float(record["validation_loss"])
    per_milestone = [{"milestone_tokens": m, **decompose(np.log(table[i])),
                      "validation_loss": table[i].tolist()} for i, m in enumerate(milestones)]
    pooled = {name: float(np.mean([p["relative_variance"][name] for p in per_milestone]))
              for name in per_milestone[0]["relative_variance"]}
    pooled_std = math.sqrt(sum(pooled.values()))
    return {
        "cell": {"size": base.model.size, "batch_clips": base.batch.global_clips, "learning_rate": base.optimizer.lr},
        "design": {"seeds": seeds, "first_seed": first_seed, "runs": seeds * seeds,
                   "rows": "initialisation seeds", "columns": "data-order and per-step draw seeds"},
        "loss": "validation loss of the run's EMA weights on the fixed validation protocol (dit.engine)",
        "milestones": per_milestone,
        "pooled": {"relative_variance": pooled, "relative_std": pooled_std,
                   "share": {k: (v / sum(pooled.values()) if sum(pooled.values()) > 0 else None) for k, v in pooled.items()},
                   "seeds_for": {f"{t:g}": seeds_for(pooled_std, t) for t in targets}},
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dit.noise_sources", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="a run's training config (YAML, as dit.train --config takes)")
    source.add_argument("--config-json", help="the same config as JSON text (what the pipeline's rule passes)")
    source.add_argument("--ensemble", type=Path, help="a job's ensemble file; --learning-rate picks the cell's member")
    parser.add_argument("--learning-rate", type=float, help="with --ensemble: the member's learning rate")
    parser.add_argument("--seeds", type=int, default=3, help="k: k initialisation seeds x k data seeds (k*k runs)")
    parser.add_argument("--first-seed", type=int, default=100, help="seeds first_seed .. first_seed + k - 1")
    parser.add_argument("--target", type=float, nargs="+", default=list(DEFAULT_TARGETS),
                        help="relative stds for which to give the seeds per cell needed")
    parser.add_argument("--out", type=Path, required=True, help="the output JSON")
    parser.add_argument("--work", type=Path, help="job folder (checkpoint and run folders); default OUT's stem + .work")
    return parser


def _base_config(args) -> TrainConfig:
    if args.config:
        return load_config(args.config)
    if args.config_json:
        try:
            raw = json.loads(args.config_json)
        except json.JSONDecodeError as error:
            raise ConfigError(f"--config-json is not JSON: {error}") from None
        if not isinstance(raw, dict):
            raise ConfigError("--config-json must be a JSON object (a training config)")
        return config_from_dict(raw)
    if args.learning_rate is None:
        raise ConfigError("--ensemble needs --learning-rate to pick the cell's member")
    members = [config for config, _ in load_ensemble(args.ensemble)]
    chosen = [c for c in members if math.isclose(c.optimizer.lr, args.learning_rate, rel_tol=1e-9)]
    if not chosen:
        raise ConfigError(f"{args.ensemble}: no member has learning rate {args.learning_rate:g} "
                          f"(it has {sorted({c.optimizer.lr for c in members})})")
    return chosen[0]


def check_options(args, work: Path) -> None:
    """Before any training: ``ConfigError`` for ``--seeds`` below 2, a ``--target`` or ``--learning-rate`` that is not
    positive and finite; ``OutputPathError`` for an ``--out`` that is a folder, lies below a file or is the config or
    ensemble file, and for a job folder (``--work``) that is a file, lies below one or is ``--out``."""
    if args.seeds < 2:
        raise ConfigError(f"--seeds must be at least 2 (a k x k design needs k >= 2), got {args.seeds}")
    for target in args.target:
        if not 0 < target < math.inf:
            raise ConfigError(f"--target must be positive and finite (a relative std), got {target}")
    if args.learning_rate is not None and not 0 < args.learning_rate < math.inf:
        raise ConfigError(f"--learning-rate must be positive and finite, got {args.learning_rate}")
    check_output_files([args.out], [args.config, args.ensemble])
    check_output_folder(work, "--work")
    if os.path.realpath(work) == os.path.realpath(args.out):
        raise OutputPathError(f"--work {work} is also --out; give the job folder a path of its own")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        work = args.work or args.out.with_suffix(".work")
        check_options(args, work)
        base = _base_config(args)
        document = study(base, args.seeds, args.first_seed, work, tuple(args.target))
    except ConfigError as error:
        print(f"dit.noise_sources: configuration error: {error}", file=sys.stderr)
        return 2
    except OutputPathError as error:
        print(f"dit.noise_sources: {error}", file=sys.stderr)
        return 2
    document["provenance"] = provenance({"config": base.to_dict(), "seeds": args.seeds, "first_seed": args.first_seed,
                                         "targets": args.target})
    atomic_write_json(args.out, document)
    pooled = document["pooled"]
    shares = ", ".join(f"{name} {share:.0%}" for name, share in pooled["share"].items() if share is not None)
    print(f"{args.out}: run-to-run relative std {pooled['relative_std']:.4f} ({shares}); seeds per cell for "
          + ", ".join(f"{t}: {n}" for t, n in pooled["seeds_for"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
