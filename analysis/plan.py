"""Plan a training run before spending the budget: ``python -m analysis.plan --flops 1e22 --paper``.

Given a training compute budget C (FLOPs) and optionally a cap on the model size
(``--max-parameters``, raw count) or on the cost of generating one video
(``--max-inference-flops``), prints the model size N, training tokens T, batch size B (tokens and
clips), learning rate, the predicted validation loss with its interval, the inference cost and the
conventional alternative (one fixed batch size and learning rate for every size).

Laws: ``--laws results/laws.json`` (fitted by ``analysis.fit``; N_opt by minimising the fitted
L(N, T) under the budget, intervals from the bootstrap) or ``--paper`` (the published laws; N_opt
from the published ``N_opt = 0.8705 C^0.4294``; no intervals were published, so the prediction
interval is +-1.96 x the published fit RMSE).

``--json`` prints the same as one JSON object with these keys:

* ``laws``: ``"paper"`` or the laws file path; ``budget_flops``; ``flop_model`` (how C is counted);
* ``constraints``: ``max_parameters``, ``max_inference_flops``, ``cap_parameters`` (the tighter cap
  as a size), ``binding`` (true when a cap moved N below the compute-optimal size);
* ``recommended``: ``parameters`` (raw), ``parameters_billions``, ``parameters_interval`` (or null),
  ``unconstrained_parameters``, ``tokens``, ``clips``, ``tokens_per_clip``, ``batch_tokens``,
  ``batch_clips``, ``learning_rate``, ``steps`` (= T / B), ``predicted_loss`` (``value``,
  ``interval``, ``prediction_interval``, ``level``), ``inference_flops_per_video``;
* ``conventional``: ``status`` and, when available, ``parameters``, ``tokens``, ``predicted_loss``,
  ``loss_meaning``, ``inference_flops_per_video``, ``batch_tokens``, ``learning_rate``;
* ``reductions``: ``model_size`` and ``inference_flops`` (1 - recommended / conventional), or null;
* ``warnings``: extrapolation and other caveats; ``assumptions``: what the numbers rest on.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from analysis import paper
from analysis.allocation import BILLION, parameters_for_inference_budget
from analysis.intervals import percentile_interval
from analysis.law_set import LawSet, LawsFileError, read_laws


def make_plan(laws: LawSet, flops: float, max_parameters: float | None = None, max_inference_flops: float | None = None,
              laws_label: str = "") -> dict:
    """The plan as a dict (keys in the module docstring)."""
    _check_positive("--flops", flops)
    cap = _size_cap(laws, max_parameters, max_inference_flops)
    unconstrained = laws.optimal_parameters(flops)
    recommended = _recommended(laws, flops, cap, unconstrained)
    conventional = _conventional(laws, flops, cap)
    reductions = None
    if "parameters" in conventional:
        reductions = {
            "model_size": 1 - recommended["parameters"] / conventional["parameters"],
            "inference_flops": 1 - recommended["inference_flops_per_video"] / conventional["inference_flops_per_video"],
        }
    warnings = _extrapolation_warnings(laws, recommended["parameters_billions"], recommended["tokens"] / BILLION)
    warnings += _consistency_warnings(laws, flops, recommended, conventional)
    return {
        "laws": laws_label or laws.origin,
        "budget_flops": flops,
        "flop_model": laws.flop_model.describe(),
        "constraints": {
            "max_parameters": max_parameters, "max_inference_flops": max_inference_flops,
            "cap_parameters": cap, "binding": bool(cap is not None and cap < unconstrained),
        },
        "recommended": recommended,
        "conventional": conventional,
        "reductions": reductions,
        "warnings": warnings,
        "assumptions": _assumptions(laws),
    }


def _check_positive(option: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{option} must be a positive finite number, got {value}")


def _size_cap(laws: LawSet, max_parameters: float | None, max_inference_flops: float | None) -> float | None:
    """The tighter of the size cap and the size an inference budget allows (raw parameters), or None."""
    caps = []
    if max_parameters is not None:
        _check_positive("--max-parameters", max_parameters)
        caps.append(float(max_parameters))
    if max_inference_flops is not None:
        _check_positive("--max-inference-flops", max_inference_flops)
        caps.append(parameters_for_inference_budget(max_inference_flops, laws.flop_model.width_rule, laws.inference))
    return min(caps) if caps else None


def _recommended(laws: LawSet, flops: float, cap: float | None, unconstrained: float) -> dict:
    """The recommended run: the compute-optimal size (capped), its tokens, B and LR from the precise laws, its loss and cost."""
    n = min(unconstrained, cap) if cap else unconstrained
    samples = laws.optimal_parameters_samples(flops, max_parameters=cap)
    binding = cap is not None and cap < unconstrained
    n_interval = list(percentile_interval(samples, laws.level)) if samples is not None and len(samples) >= 2 and not binding else None
    tokens = laws.tokens_for_budget(n, flops)
    n_b, t_b = n / BILLION, tokens / BILLION
    batch = float(laws.batch_tokens(n_b, t_b))
    per_clip = laws.context_tokens
    return {
        "parameters": n, "parameters_billions": n_b, "parameters_interval": n_interval, "unconstrained_parameters": unconstrained,
        "tokens": tokens, "clips": tokens / per_clip, "tokens_per_clip": per_clip,
        "batch_tokens": batch, "batch_tokens_interval": laws.hyperparameter_interval("batch_size", n_b, t_b),
        "batch_clips": batch / per_clip, "learning_rate": float(laws.learning_rate(n_b, t_b)),
        "learning_rate_interval": laws.hyperparameter_interval("learning_rate", n_b, t_b), "steps": tokens / batch,
        "predicted_loss": laws.loss_prediction(n_b, t_b), "inference_flops_per_video": float(laws.inference_flops(n)),
    }


def _conventional(laws: LawSet, flops: float, cap: float | None) -> dict:
    """The conventional alternative: the published point (paper, at its budget only) or the fitted conventional law."""
    per_clip = laws.context_tokens
    if laws.origin == "paper":
        if not np.isclose(flops, paper.TARGET_FLOPS, rtol=0.01):
            return {"status": "not published", "reason": f"the paper gives the conventional compute-optimal size only at "
                    f"{paper.TARGET_FLOPS:.0e} FLOPs ({paper.CONVENTIONAL_SIZE_AT_TARGET:.3g} parameters)"}
        n_c = paper.CONVENTIONAL_SIZE_AT_TARGET
        t_c = laws.tokens_for_budget(n_c, flops)
        return {"status": "published point", "parameters": n_c, "tokens": t_c,
                "predicted_loss": laws.loss_prediction(n_c / BILLION, t_c / BILLION),
                "loss_meaning": "the published optimal-hyperparameter law at the conventional size (no conventional loss law was published)",
                "inference_flops_per_video": float(laws.inference_flops(n_c)), "batch_tokens": None, "learning_rate": None,
                "note": "the paper's fixed sub-optimal batch size and learning rate are not published"}
    if not laws.has("loss_conventional"):
        return {"status": "not fitted", "reason": laws.laws.get("loss_conventional", {}).get("reason", "absent")}
    n_c = laws.optimal_parameters(flops, which="conventional", max_parameters=cap)
    t_c = laws.tokens_for_budget(n_c, flops)
    cell = laws.document.get("setup", {}).get("conventional_cell") or {}
    return {"status": "fitted", "parameters": n_c, "tokens": t_c,
            "predicted_loss": laws.loss_prediction(n_c / BILLION, t_c / BILLION, which="conventional"),
            "loss_meaning": "the conventional law: every size trained at the fixed cell" + (" (same size cap)" if cap is not None else ""),
            "inference_flops_per_video": float(laws.inference_flops(n_c)),
            "batch_tokens": cell["batch_clips"] * per_clip if cell else None, "learning_rate": cell.get("learning_rate") if cell else None}


def _consistency_warnings(laws: LawSet, flops: float, recommended: dict, conventional: dict) -> list[str]:
    """With the paper's laws: whether the published N_opt law's size has a lower published loss than the conventional
    size. A property of the two laws, so the N_opt law's own size is compared, whatever size cap the plan has."""
    if laws.origin != "paper" or conventional.get("status") != "published point":
        return []
    n_opt = recommended["unconstrained_parameters"]
    loss = laws.loss_prediction(n_opt / BILLION, laws.tokens_for_budget(n_opt, flops) / BILLION)["value"]
    other = conventional["predicted_loss"]["value"]
    if loss <= other:
        return []
    return [f"the published N_opt law and the published L(N, T) disagree: at {flops:.3g} FLOPs the N_opt law recommends "
            f"{n_opt:.4g} parameters, whose published loss ({loss:.6f}) is higher than that of the "
            f"conventional {conventional['parameters']:.4g} ({other:.6f}); minimising L(N, T) itself would pick a larger model "
            "(FINDINGS.md, question 1)"]


def _assumptions(laws: LawSet) -> list[str]:
    assumptions = list(laws.document.get("assumptions", []))
    if laws.origin != "paper":
        assumptions.append(f"compute: {laws.flop_model.describe()}")
    inference = laws.inference
    assumptions.append(f"inference cost: {inference.sampling_steps} sampling steps, {inference.video_tokens} video tokens, "
                       f"{inference.text_tokens} text tokens, attention included (dit.flops.inference_flops_per_video)")
    return assumptions


def _extrapolation_warnings(laws: LawSet, n_b: float, t_b: float) -> list[str]:
    if laws.origin == "paper":
        n_range = (min(paper.FITTING_SIZES), max(paper.HELDOUT_SIZES))
        t_range = paper.FITTING_TOKENS
    else:
        sizes = laws.document["setup"]["fitting_sizes"] + laws.document["setup"].get("heldout_sizes", [])
        n_range = (min(s["N"] for s in sizes), max(s["N"] for s in sizes))
        budgets = laws.document["setup"]["budgets_tokens"]
        t_range = (min(budgets) / BILLION, max(budgets) / BILLION)
    warnings = []
    if not n_range[0] <= n_b <= n_range[1]:
        warnings.append(f"N = {n_b:.3g} B is outside the sizes behind the laws ({n_range[0]:.3g}-{n_range[1]:.3g} B): an extrapolation by {max(n_b / n_range[1], n_range[0] / n_b):.3g}x")
    if not t_range[0] <= t_b <= t_range[1]:
        warnings.append(f"T = {t_b:.3g} B tokens is outside the budgets behind the laws ({t_range[0]:.3g}-{t_range[1]:.3g} B): an extrapolation by {max(t_b / t_range[1], t_range[0] / t_b):.3g}x")
    return warnings


def _interval(values) -> str:
    return "" if not values else f" (interval {values[0]:.4g} to {values[1]:.4g})"


def format_plan(plan: dict) -> str:
    r = plan["recommended"]
    loss = r["predicted_loss"]
    level = int(round(100 * loss["level"]))
    lines = [
        f"Training plan for a compute budget of {plan['budget_flops']:.3g} FLOPs (laws: {plan['laws']})",
        f"  compute counted as {plan['flop_model']}",
        "",
        "Recommended run (batch size and learning rate from the precise laws):",
        f"  model size N        {r['parameters']:.4g} non-embedding parameters ({r['parameters_billions']:.4g} billion){_interval(r['parameters_interval'])}",
        f"  training data T     {r['tokens']:.4g} video tokens = {r['clips']:.4g} clips of {r['tokens_per_clip']:g} tokens",
        f"  batch size B        {r['batch_tokens']:.4g} tokens = {r['batch_clips']:.4g} clips per step{_interval(r['batch_tokens_interval'])}",
        f"  learning rate       {r['learning_rate']:.4g} (constant after warmup){_interval(r['learning_rate_interval'])}",
        f"  optimizer steps     {r['steps']:.4g}",
        f"  predicted loss      {loss['value']:.5f}"
        + (f" ({level}% prediction interval {loss['prediction_interval'][0]:.5f} to {loss['prediction_interval'][1]:.5f})" if loss["prediction_interval"] else ""),
        f"  inference cost      {r['inference_flops_per_video']:.4g} FLOPs to generate one video",
    ]
    constraints = plan["constraints"]
    if constraints["cap_parameters"] is not None:
        state = "binding: the model is smaller than compute-optimal" if constraints["binding"] else "not binding"
        lines.append(f"  size cap            {constraints['cap_parameters']:.4g} parameters ({state}; unconstrained optimum {r['unconstrained_parameters']:.4g})")
    c = plan["conventional"]
    lines.append("")
    if "parameters" in c:
        lines.append("Conventional alternative (one fixed batch size and learning rate for every model size):")
        lines.append(f"  model size N        {c['parameters']:.4g} parameters, trained on {c['tokens']:.4g} tokens")
        lines.append(f"  predicted loss      {c['predicted_loss']['value']:.5f} ({c['loss_meaning']})")
        lines.append(f"  inference cost      {c['inference_flops_per_video']:.4g} FLOPs per video")
        if c.get("batch_tokens"):
            lines.append(f"  fixed cell          B = {c['batch_tokens']:.4g} tokens, LR = {c['learning_rate']:.4g}")
        if c.get("note"):
            lines.append(f"  note                {c['note']}")
        red = plan["reductions"]
        size_word = "smaller" if red["model_size"] >= 0 else "larger"
        cost_word = "cheaper" if red["inference_flops"] >= 0 else "dearer"
        lines.append(
            f"  the recommended model is {100 * abs(red['model_size']):.1f}% {size_word} and "
            f"{100 * abs(red['inference_flops']):.1f}% {cost_word} per generated video"
        )
    else:
        lines.append(f"Conventional alternative: {c['status']}: {c.get('reason', '')}")
    if plan["warnings"]:
        lines += ["", "Warnings:"] + [f"  - {w}" for w in plan["warnings"]]
    if plan["assumptions"]:
        lines += ["", "Assumptions:"] + [f"  - {a}" for a in plan["assumptions"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.plan", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--laws", help="laws.json written by analysis.fit")
    source.add_argument("--paper", action="store_true", help="use the paper's published laws")
    parser.add_argument("--flops", type=float, required=True, help="training compute budget C in FLOPs, e.g. 1e22")
    parser.add_argument("--max-parameters", type=float, help="cap on the model size N (non-embedding parameters, raw count)")
    parser.add_argument("--max-inference-flops", type=float, help="cap on the FLOPs to generate one video")
    parser.add_argument("--json", action="store_true", help="print JSON (keys documented in the module docstring)")
    args = parser.parse_args(argv)
    try:
        if args.paper:
            laws, label = LawSet(paper.laws_document()), "the paper's published laws"
        else:
            laws, label = LawSet(read_laws(args.laws)), args.laws
        plan = make_plan(laws, args.flops, args.max_parameters, args.max_inference_flops, label)
    except (LawsFileError, ValueError) as error:
        print(f"analysis.plan: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(plan, indent=2, default=float) if args.json else format_plan(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
