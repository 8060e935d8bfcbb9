"""Propose the held-out runs that test the fitted laws: ``python -m analysis.propose ...``.

Two kinds of proposal groups, written as JSON (``--out``) with the list of runs to train:

* ``hyperparameters``: for each held-out ``--size`` at budget ``--tokens``, the laws' predicted
  (B, LR); the grid cell nearest to it (log space, per axis, among ``--batch-clips`` x
  ``--learning-rates``; each list is extended by one geometric step beyond its ends first, so a
  prediction outside the grid gets the cell just beyond it) and that cell's grid neighbours
  (``--neighbours plus``: the 4 axis neighbours; ``box``: all 8). The pipeline trains these
  (series ``heldout``) and ``analysis.heldout`` checks that the predicted cell is the best and the
  predicted loss matches.
* ``compute_optimal``: the laws' compute-optimal size at a held-out budget, chosen among the
  registered sizes of the family: with ``--compute-size NAME``, the budget C at which the fitted
  N_opt(C) equals that size (the paper's choice of 0.72B at 5.85e20 FLOPs); with ``--compute-flops C``,
  the registered size nearest to N_opt(C). Trained at the predicted (B, LR)'s nearest cell
  (series ``compute_optimal``). Default: ``--compute-size`` = the first ``--size``.

Output keys: ``schema``, ``laws``, ``groups`` (one record per group: ``kind``, ``size``, ``N``,
``tokens``, ``predicted`` {``batch_tokens``, ``batch_source`` (``law``, or ``grid_edge`` where the batch-size
law was not fitted because its optima sit on the grid's edge: ``LawSet.predicted_batch_tokens``),
``batch_clips``, ``learning_rate``, ``loss``},
``nearest_cell``, ``cells``, ``extended``, and for compute_optimal ``flops`` and
``law_optimal_parameters``), ``runs`` (``pipeline.formats.PROPOSED_RUN_KEYS``: ``group``, ``series``,
``size``, ``batch_clips``, ``learning_rate``, ``seed``, ``milestones_tokens``), ``provenance``. The
pipeline names the runs; ``analysis.heldout`` finds the trained runs by (series, size, batch_clips,
learning_rate).

Refused before any work (exit status 2, the message naming the option or file): ``--batch-clips`` that are not
positive whole numbers, ``--learning-rates`` or ``--compute-flops`` that are not positive and finite, token counts
(``--tokens``, ``--milestones``, ``--max-compute-tokens``) that are not positive whole numbers, a negative ``--seed``,
an unknown size or ``--family``, a laws file that ``analysis.law_set.read_laws`` refuses, and an ``--out`` that is a
folder, lies below a file or is the laws file.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from dit.atomic import OutputPathError, atomic_write_json, check_output_files
from dit.flops import flops_per_token
from dit.provenance import provenance
from dit.sizes import SIZES, get_size, sizes_in_family
from pipeline.formats import PROPOSAL_SCHEMA, check_proposed_run

from analysis.allocation import BILLION
from analysis.law_set import LawSet, LawsFileError, read_laws

#: The registry's size families (``--family``).
FAMILIES = tuple(sorted({size.family for size in SIZES.values()}))


def extended_axis(values, integer: bool = False) -> list[float]:
    """The sorted grid values with one geometric step added beyond each end."""
    values = sorted(float(v) for v in values)
    if len(values) < 2:
        raise ValueError(f"a grid axis needs at least two values, got {values}")
    low = values[0] / (values[1] / values[0])
    high = values[-1] * (values[-1] / values[-2])
    if integer:
        low, high = max(1, round(low)), round(high)
        if low >= values[0]:
            low = None
    return [v for v in [low, *values, high] if v is not None]


def nearest_with_neighbours(values: list[float], predicted: float) -> tuple[int, list[int]]:
    index = int(np.argmin(np.abs(np.log(values) - np.log(predicted))))
    return index, [i for i in (index - 1, index + 1) if 0 <= i < len(values)]


def propose_cells(predicted_batch_clips: float, predicted_rate: float, batch_clips, learning_rates, neighbours: str = "plus"):
    """``(nearest (b, lr), cells [(b, lr)...], extended flag)`` on the extended grid."""
    b_axis = extended_axis(batch_clips, integer=True)
    r_axis = extended_axis(learning_rates)
    bi, b_near = nearest_with_neighbours(b_axis, predicted_batch_clips)
    ri, r_near = nearest_with_neighbours(r_axis, predicted_rate)
    cells = [(bi, ri)] + [(b, ri) for b in b_near] + [(bi, r) for r in r_near]
    if neighbours == "box":
        cells += [(b, r) for b in b_near for r in r_near]
    elif neighbours != "plus":
        raise ValueError(f"--neighbours: {neighbours!r} is not one of plus, box")
    grid_b = {float(v) for v in batch_clips}
    grid_r = {float(v) for v in learning_rates}
    nearest = (int(b_axis[bi]), float(r_axis[ri]))
    extended = nearest[0] not in grid_b or nearest[1] not in grid_r
    return nearest, [(int(b_axis[b]), float(r_axis[r])) for b, r in cells], extended


def _milestones(laws: LawSet, tokens: float, explicit) -> list[int]:
    if explicit:
        return sorted({int(round(t)) for t in explicit if t <= tokens} | {int(round(tokens))})
    budgets = laws.document.get("setup", {}).get("budgets_tokens") or []
    chosen = {int(round(b)) for b in budgets if b < tokens * 0.99}
    if not chosen:
        chosen = {int(round(tokens / 8)), int(round(tokens / 4)), int(round(tokens / 2))}
    return sorted(chosen | {int(round(tokens))})


def _prediction(laws: LawSet, n: float, tokens: float) -> dict:
    n_b, t_b = n / BILLION, tokens / BILLION
    batch, batch_source = laws.predicted_batch_tokens(n_b, t_b)
    return {
        "batch_tokens": batch,
        "batch_source": batch_source,
        "batch_clips": batch / laws.context_tokens,
        "learning_rate": float(laws.learning_rate(n_b, t_b)),
        "loss": laws.loss_prediction(n_b, t_b),
    }


def budget_for_size(laws: LawSet, parameters: float) -> float:
    """The budget C (FLOPs) at which the laws' compute-optimal N equals ``parameters`` (bisection in log C)."""
    low, high = np.log(1e6), np.log(1e30)
    for _ in range(200):
        middle = 0.5 * (low + high)
        if laws.optimal_parameters(float(np.exp(middle))) < parameters:
            low = middle
        else:
            high = middle
    return float(np.exp(0.5 * (low + high)))


def make_proposal(laws: LawSet, sizes, tokens, batch_clips, learning_rates, neighbours="plus", milestones=None,
                  compute_size=None, compute_flops=None, family=None, compute_optimal=True, seeds=(0,),
                  max_compute_tokens: float | None = None) -> dict:
    """The held-out groups and their runs; each cell (and the compute-optimal run) gets one run per seed of ``seeds``,
    whose mean loss the held-out check compares with the laws."""
    seeds = [int(seed) for seed in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    groups, runs, warnings = [], [], []
    for size_name in sizes:
        size = get_size(size_name)
        if tokens is None:
            raise ValueError("--tokens is required with --size")
        n = size.non_embedding_parameters
        predicted = _prediction(laws, n, tokens)
        nearest, cells, extended = propose_cells(predicted["batch_clips"], predicted["learning_rate"], batch_clips, learning_rates, neighbours)
        group = len(groups)
        groups.append({
            "kind": "hyperparameters", "size": size_name, "N": n / BILLION, "tokens": float(tokens), "predicted": predicted,
            "nearest_cell": {"batch_clips": nearest[0], "learning_rate": nearest[1]},
            "cells": [{"batch_clips": b, "learning_rate": r} for b, r in cells], "extended": extended,
        })
        run_milestones = _milestones(laws, tokens, milestones)
        for b, r in cells:
            runs += [{"group": group, "series": "heldout", "size": size_name, "batch_clips": b, "learning_rate": r,
                      "seed": seed, "milestones_tokens": run_milestones} for seed in seeds]
    if compute_optimal and (compute_size or compute_flops or sizes):
        if compute_flops is None:
            target = get_size(compute_size or sizes[0])
            flops = budget_for_size(laws, target.non_embedding_parameters)
            law_n = target.non_embedding_parameters
        else:
            flops = float(compute_flops)
            law_n = laws.optimal_parameters(flops)
            family = family or (get_size(sizes[0]).family if sizes else laws.flop_model.width_rule.family or "tiny")
            members = sizes_in_family(family)
            target = members[int(np.argmin([abs(np.log(m.non_embedding_parameters / law_n)) for m in members]))]
        convention = laws.flop_model.convention
        per_token = flops_per_token(target.non_embedding_parameters, laws.context_tokens, target.width, convention)
        target_tokens = flops / per_token
        fitted_budgets = laws.document.get("setup", {}).get("budgets_tokens") or []
        if fitted_budgets and target_tokens > 10 * max(fitted_budgets):
            warnings.append(
                f"the compute-optimal run of {target.name} needs {target_tokens:.3g} tokens, "
                f"{target_tokens / max(fitted_budgets):.0f}x the largest fitted budget ({max(fitted_budgets):.3g}); check the laws' fit"
            )
        if max_compute_tokens is not None and target_tokens > max_compute_tokens:
            warnings.append(f"compute-optimal run capped at --max-compute-tokens {max_compute_tokens:.3g} (was {target_tokens:.3g})")
            target_tokens = float(max_compute_tokens)
            flops = target_tokens * per_token
        predicted = _prediction(laws, target.non_embedding_parameters, target_tokens)
        nearest, _, extended = propose_cells(predicted["batch_clips"], predicted["learning_rate"], batch_clips, learning_rates, neighbours)
        group = len(groups)
        groups.append({
            "kind": "compute_optimal", "size": target.name, "N": target.non_embedding_parameters / BILLION, "flops": flops,
            "law_optimal_parameters": float(law_n), "tokens": float(target_tokens), "predicted": predicted,
            "nearest_cell": {"batch_clips": nearest[0], "learning_rate": nearest[1]},
            "cells": [{"batch_clips": nearest[0], "learning_rate": nearest[1]}], "extended": extended,
        })
        run_milestones = _milestones(laws, target_tokens, None)
        runs += [{
            "group": group, "series": "compute_optimal", "size": target.name, "batch_clips": nearest[0],
            "learning_rate": nearest[1], "seed": seed, "milestones_tokens": run_milestones,
        } for seed in seeds]
    if any(group["predicted"]["batch_source"] == "grid_edge" for group in groups):
        warnings.append("the batch-size law was not fitted (most measured optima sit at one edge of the grid): the "
                        "proposal's batch is that edge, and only the learning rate is the laws' prediction")
    for position, run in enumerate(runs):
        check_proposed_run(run, f"runs[{position}]")
    return {"schema": PROPOSAL_SCHEMA, "groups": groups, "runs": runs, "warnings": warnings}


def _numbers(option: str, values, whole: bool = False) -> list[float]:
    """The numbers given to ``option`` (space- or comma-separated); ``ValueError`` naming the option unless each is
    finite and positive, and a whole number where ``whole``."""
    out = []
    for text in " ".join(str(value) for value in values).replace(",", " ").split():
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{option}: {text!r} is not a number") from None
        if not (math.isfinite(value) and value > 0) or (whole and value != int(value)):
            raise ValueError(f"{option}: {text} is not a positive {'whole' if whole else 'finite'} number")
        out.append(value)
    return out


def _check_options(args: argparse.Namespace) -> dict:
    """The grid and budget options as numbers (``ValueError`` naming the option and value where one is not
    valid: batch sizes and token counts positive whole numbers, learning rates and FLOPs positive and finite, seeds
    whole numbers >= 0, sizes registered)."""
    unknown = [s for s in args.size + ([args.compute_size] if args.compute_size else []) if s not in SIZES]
    if unknown:
        raise ValueError(f"unknown size(s) {', '.join(unknown)}; known: {', '.join(SIZES)}")
    negative = [seed for seed in args.seed if seed < 0]
    if negative:
        raise ValueError(f"--seed: {negative[0]} is negative; seeds are whole numbers >= 0")
    for option, value, whole in (("--tokens", args.tokens, True), ("--compute-flops", args.compute_flops, False),
                                 ("--max-compute-tokens", args.max_compute_tokens, True)):
        if value is not None:
            _numbers(option, [value], whole)
    return {
        "batch_clips": [int(v) for v in _numbers("--batch-clips", args.batch_clips, whole=True)],
        "learning_rates": _numbers("--learning-rates", args.learning_rates),
        "milestones": _numbers("--milestones", args.milestones, whole=True) if args.milestones else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.propose", description=__doc__.split("\n\n")[0])
    parser.add_argument("--laws", required=True, help="laws.json written by analysis.fit")
    parser.add_argument("--size", action="append", default=[], help="held-out size name (repeatable)")
    parser.add_argument("--tokens", type=float, help="budget T in tokens for the hyperparameter check")
    parser.add_argument("--milestones", nargs="+", help="milestones in tokens (default: the fit's budgets below T, and T)")
    parser.add_argument("--batch-clips", nargs="+", required=True, help="the grid's batch sizes in clips")
    parser.add_argument("--learning-rates", nargs="+", required=True, help="the grid's learning rates")
    parser.add_argument("--neighbours", choices=("plus", "box"), default="plus", help="grid neighbours of the nearest cell to train")
    parser.add_argument("--compute-size", help="registered size whose compute-optimal budget is the held-out budget")
    parser.add_argument("--compute-flops", type=float, help="held-out budget C in FLOPs (the nearest registered size is trained)")
    parser.add_argument("--family", choices=FAMILIES, help="registry family for --compute-flops (default: the family of --size)")
    parser.add_argument("--no-compute-optimal", action="store_true", help="propose no compute-optimal run")
    parser.add_argument("--seed", type=int, nargs="+", default=[0],
                        help="training seeds of the proposed runs (default 0): each cell gets one run per seed, and the "
                             "held-out check compares their mean loss")
    parser.add_argument("--max-compute-tokens", type=float, help="cap on the compute-optimal run's tokens (its budget shrinks to match)")
    parser.add_argument("--out", required=True, help="proposal JSON to write (atomically)")
    args = parser.parse_args(argv)
    try:
        check_output_files([args.out], [args.laws])
        grid = _check_options(args)
        laws = LawSet(read_laws(args.laws))
        proposal = make_proposal(
            laws, args.size, args.tokens, grid["batch_clips"], grid["learning_rates"], args.neighbours, grid["milestones"],
            args.compute_size, args.compute_flops, args.family, not args.no_compute_optimal, args.seed, args.max_compute_tokens,
        )
    except (LawsFileError, OutputPathError, ValueError, KeyError) as error:
        print(f"analysis.propose: error: {error}", file=sys.stderr)
        return 2
    proposal["laws"] = args.laws
    proposal["provenance"] = provenance({key: value for key, value in vars(args).items()})
    atomic_write_json(args.out, proposal)
    for group in proposal["groups"]:
        p = group["predicted"]
        print(
            f"{group['kind']}: {group['size']} at {group['tokens']:.4g} tokens: predicted B {p['batch_clips']:.3g} clips, "
            f"LR {p['learning_rate']:.3g}, loss {p['loss']['value']:.5f}; nearest cell {group['nearest_cell']}"
            + (" (beyond the grid)" if group["extended"] else "")
        )
    for warning in proposal["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{len(proposal['runs'])} runs to train -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
