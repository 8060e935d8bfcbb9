"""End to end on a synthetic runs table drawn from known laws: fit CLI, laws.json, figures, tables,
planner with fitted laws, proposals and the held-out evaluation, and the too-few-runs message."""

import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib import image as mpimg
from scipy.stats import studentized_range

from dit.provenance import table_sha256_without_clocks
from dit.sizes import get_size, sizes_in_family

from analysis import figures, tables
from analysis.blas import limit_openblas_threads
from analysis.facts import main as facts_main
from analysis.fit import main as fit_main
from analysis.heldout import main as heldout_main
from analysis.law_set import LawSet, read_laws
from analysis.plan import main as plan_main
from analysis.propose import extended_axis, main as propose_main, propose_cells
from analysis.report import main as report_main
from analysis.synthetic_runs import SyntheticDesign, SyntheticTruth, synthetic_proposal_runs, synthetic_runs
from analysis.verdicts import from_interval

limit_openblas_threads()  # as the fitting commands do: one OpenBLAS thread

TRUTH = SyntheticTruth()
DESIGN = SyntheticDesign()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("analysis")
    runs = folder / "runs.csv"
    synthetic_runs(TRUTH, DESIGN, seed=0).to_csv(runs, index=False)
    config = folder / "fit.yaml"
    config.write_text(yaml.safe_dump({
        "heldout_sizes": DESIGN.heldout_sizes,
        "conventional_cell": {"batch_clips": 16, "learning_rate": 2e-3},
        "bootstrap_resamples": 40,
        "seed": 7,
    }))
    laws = folder / "laws.json"
    assert fit_main(["--runs", str(runs), "--config", str(config), "--out", str(laws), "--quiet"]) == 0
    facts = folder / "facts.json"
    assert facts_main(["--laws", str(laws), "--runs", str(runs), "--out", str(facts), "--scorecard", str(folder / "scorecard.json")]) == 0
    return {"folder": folder, "runs": runs, "config": config, "laws": laws, "document": json.loads(laws.read_text()),
            "facts_path": facts, "facts": json.loads(facts.read_text())}


def test_recovers_the_known_laws(fitted):
    laws = fitted["document"]["laws"]
    loss = laws["loss_optimal"]["parameters"]
    # tolerances for the default design (5 sizes x 12 cells x 6 milestones, noise 3e-4 per run + 1e-4 per milestone)
    assert loss["alpha"] == pytest.approx(TRUTH.loss["alpha"], abs=0.015)
    assert loss["beta"] == pytest.approx(TRUTH.loss["beta"], abs=0.03)
    assert loss["L_inf"] == pytest.approx(TRUTH.loss["L_inf"], abs=0.01)
    assert loss["a"] == pytest.approx(TRUTH.loss["a"], rel=0.15)
    batch = laws["batch_size"]["parameters"]
    assert batch["b"] == pytest.approx(TRUTH.batch_size["b"], abs=0.05)
    assert batch["c"] == pytest.approx(TRUTH.batch_size["c"], abs=0.05)
    rate = laws["learning_rate"]["parameters"]
    assert rate["b"] == pytest.approx(TRUTH.learning_rate["b"], abs=0.02)
    assert rate["c"] == pytest.approx(TRUTH.learning_rate["c"], abs=0.02)
    assert rate["a"] == pytest.approx(TRUTH.learning_rate["a"], rel=0.25)
    # the interval of each fitted exponent is a real interval around the estimate
    for name, parameter in (("loss_optimal", "alpha"), ("batch_size", "b"), ("learning_rate", "c")):
        low, high = laws[name]["intervals"][parameter]
        assert low < laws[name]["parameters"][parameter] < high


def test_laws_file_records_everything(fitted):
    document = fitted["document"]
    assert document["schema"] == "analysis.laws/2"
    assert document["provenance"]["config"]["fit_config"]["bootstrap_resamples"] == 40
    # the runs table's rows without the clock column: a rerun that only took another time fits the same table
    table = pd.read_csv(fitted["runs"], dtype=str, keep_default_na=False)  # the synthetic table has no clock column
    rows = [list(table.columns), *table.values.tolist()]
    expected = hashlib.sha256(b"".join(json.dumps(row).encode() + b"\n" for row in rows)).hexdigest()
    assert document["provenance"]["config"]["runs_sha256_without_clocks"] == expected
    slower = fitted["folder"] / "slower_runs.csv"
    table.assign(wall_time_s="1e9").to_csv(slower, index=False)
    assert table_sha256_without_clocks(slower) == expected
    table.assign(validation_loss=table["validation_loss"].where(table.index != 0, "0.5")).to_csv(slower, index=False)
    assert table_sha256_without_clocks(slower) != expected
    for name in ("loss_optimal", "loss_conventional", "batch_size", "learning_rate", "kaplan", "chinchilla_all_runs",
                 "deepseek_batch_size", "deepseek_learning_rate"):
        law = document["laws"][name]
        assert law["status"] == "fitted", name
        assert law["runs"] and law["units"] and law["formula"]
        assert set(law["intervals"]) == set(law["parameters"])
        assert law["bootstrap"]["usable"] >= 30
    excluded = {e["status"] for e in document["runs"]["excluded"]}
    assert excluded == {"diverged", "failed"}
    used = set(document["laws"]["loss_optimal"]["runs"])
    counted = {e["run_id"] for e in document["runs"]["excluded"] if e["counted_before_divergence"]}
    assert used & {e["run_id"] for e in document["runs"]["excluded"]} == counted  # only at the budgets it reached
    assert {e["status"] for e in document["runs"]["excluded"] if e["counted_before_divergence"]} == {"diverged"}
    assert not any(r.startswith("grid_tiny-262k") for r in used)  # held out
    assert document["setup"]["noise"]["source"].startswith("noise-floor seeds")
    assert document["setup"]["conventional_cell"] == {"batch_clips": 16, "learning_rate": 2e-3}
    optimum = document["optima"][0]
    assert {"learning_rate", "batch_tokens", "batch_clips", "loss", "interior_batch", "interior_learning_rate", "near_optimal"} <= set(optimum)
    assert optimum["near_optimal"][0]["loss"] <= optimum["near_optimal"][-1]["loss"]


def test_compute_optimal_comparison_and_heldout(fitted):
    document = fitted["document"]
    comparison = document["comparison"]
    assert comparison["status"] == "computed"
    for key in ("model_size_reduction", "inference_flops_reduction"):
        low, high = comparison[key]["interval"]
        assert low <= comparison[key]["value"] <= high
    # the fixed cell is sub-optimal: its law predicts a higher loss than the precise recipe at the same budget
    assert comparison["conventional"]["loss"]["value"] > comparison["precise"]["loss"]["value"]
    compute = document["compute_optimal"]
    assert compute["precise"]["status"] == "fitted" and compute["empirical_precise"]["status"] == "fitted"
    # with both laws counting compute alike, the isoFLOP and law-derived exponents agree closely (truth has no gap)
    assert compute["exponent_gap"]["optimal"]["value"] < 0.05
    heldout = document["heldout"]
    assert heldout["summary"]["points"] == 12
    assert heldout["summary"]["mean_absolute_relative_error"] < 0.005
    # 95% prediction intervals: 12 points hold at least 10 inside them with probability 0.98 (binomial)
    assert round(heldout["summary"]["coverage"] * 12) >= 10
    baselines = {row["law"]: row for row in document["baselines"]}
    assert baselines["loss_optimal"]["heldout_mean_absolute_error"] < baselines["kaplan"]["heldout_mean_absolute_error"]
    assert baselines["learning_rate"]["heldout_mean_absolute_error"] < baselines["fixed_cell_learning_rate"]["heldout_mean_absolute_error"]


@pytest.mark.slow  # 20 figures drawn and saved as PNG and PDF: about 10 s
def test_figures_have_content(fitted, tmp_path, capsys):
    document, facts = fitted["document"], fitted["facts"]
    # the command's --which: our runs' figures and the paper's, each into a folder of its own
    assert figures.main(["--facts", str(fitted["facts_path"]), "--laws", str(fitted["laws"]), "--which", "runs",
                         "--out", str(tmp_path / "ours")]) == 0
    assert figures.main(["--facts", str(fitted["facts_path"]), "--which", "paper", "--out", str(tmp_path / "published")]) == 0
    for folder, which in (("ours", "runs"), ("published", "paper")):
        index = json.loads((tmp_path / folder / "index.json").read_text())
        expected = {f"{which}/{name}.{suffix}" for name in figures.FIGURE_NAMES for suffix in ("png", "pdf")}
        assert set(index["figures"]) == expected
        assert {p.relative_to(tmp_path / folder).as_posix() for p in (tmp_path / folder).rglob("*.p*")} == expected
        assert index["provenance"]["config"]["which"] == which
    with pytest.raises(SystemExit) as stopped:  # our runs' figures need the laws
        figures.main(["--which", "runs", "--facts", str(fitted["facts_path"]), "--out", str(tmp_path / "x")])
    assert stopped.value.code == 2 and "--laws is required unless --which paper" in capsys.readouterr().err
    assert figures.main(["--which", "both", "--facts", str(fitted["facts_path"]), "--laws", str(tmp_path / "none.json"),
                         "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    width = mpimg.imread(tmp_path / "ours" / "runs" / "compute_optimal.png").shape[1]
    assert width == pytest.approx(3.4 * 300, abs=2)  # one paper column at 300 dpi
    fig = figures.runs_compute_optimal(document)
    ax = fig.axes[0]
    assert "(FLOPs)" in ax.get_xlabel() and "(parameters)" in ax.get_ylabel()
    assert any("model-size reduction" in t.get_text() for t in ax.texts)
    assert len(ax.get_lines()) >= 4
    fig = figures.runs_heatmaps(document, facts)
    assert all(axis.get_xlabel() or axis.get_ylabel() for axis in fig.axes)
    stars = [line for axis in fig.axes for line in axis.get_lines() if line.get_marker() == "*"]
    assert len(stars) == 2  # one predicted optimum per budget
    fig = figures.paper_compute_optimal(facts)
    assert any(f"{100 * (1 - 2.43 / 4.04):.1f}% smaller" in t.get_text() for t in fig.axes[0].texts)  # the paper's sizes at 1e22
    for fig in (figures.runs_loss_vs_tokens(document), figures.runs_loss_law(document), figures.paper_heatmaps(facts)):
        for axis in fig.axes:
            if axis.get_label() != "<colorbar>":
                assert "(" in axis.get_xlabel() or "(" in axis.get_ylabel() or "loss" in axis.get_ylabel()


def test_tables_have_content(fitted, tmp_path):
    written = tables.write_tables(fitted["facts"], tmp_path, source=str(fitted["facts_path"]))
    assert len(written) == 3 * len(tables.TABLE_NAMES) + 1
    coefficients = pd.read_csv(tmp_path / "coefficients.csv")
    alpha = coefficients[(coefficients["law"] == "loss_optimal") & (coefficients["parameter"] == "alpha")].iloc[0]
    assert alpha["paper"] == pytest.approx(0.2917)
    assert alpha["ours_low"] < alpha["ours"] < alpha["ours_high"]
    heldout = pd.read_csv(tmp_path / "heldout.csv")
    assert len(heldout) == 12 and set(heldout["size"]) == set(DESIGN.heldout_sizes)
    comparison = pd.read_csv(tmp_path / "comparison.csv")
    assert set(comparison["quantity"]) >= {"model-size reduction", "inference-cost reduction", "N_opt (parameters)"}
    markdown = [line.split("|") for line in (tmp_path / "coefficients.md").read_text().splitlines() if line.startswith("|")]
    assert len(markdown) == 2 + len(coefficients) and any(cells[1].strip() == "loss_optimal" for cells in markdown)
    tex = (tmp_path / "baselines.tex").read_text()
    assert "\\begin{tabular}" in tex and "deepseek\\_batch\\_size" in tex


def test_planner_with_fitted_laws(fitted, capsys):
    target = fitted["document"]["comparison"]["target_flops"]
    assert plan_main(["--flops", str(target), "--laws", str(fitted["laws"]), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    expected = fitted["document"]["comparison"]["precise"]["parameters"]["value"]
    assert plan["recommended"]["parameters"] == pytest.approx(expected, rel=1e-3)
    assert plan["recommended"]["parameters_interval"][0] < expected < plan["recommended"]["parameters_interval"][1]
    assert plan["conventional"]["status"] == "fitted"
    assert plan["conventional"]["batch_tokens"] == 16 * DESIGN.tokens_per_clip


def test_grid_extension_for_predictions_outside_the_grid():
    assert extended_axis([8, 16, 32], integer=True) == [4, 8, 16, 32, 64]
    nearest, cells, extended = propose_cells(70.0, 1e-3, [8, 16, 32], [5e-4, 1e-3, 2e-3])
    assert nearest == (64, 1e-3) and extended
    assert (32, 1e-3) in cells and (64, 2e-3) in cells and len(cells) == 4
    nearest, cells, extended = propose_cells(16.0, 1e-3, [8, 16, 32], [5e-4, 1e-3, 2e-3], neighbours="box")
    assert nearest == (16, 1e-3) and not extended and len(cells) == 9


def test_proposal_and_heldout_evaluation(fitted, tmp_path, capsys):
    proposal_path = tmp_path / "proposal.json"
    assert propose_main([
        "--laws", str(fitted["laws"]), "--size", "tiny-262k", "--tokens", str(2**24),
        "--batch-clips", "8", "16", "32", "--learning-rates", "5e-4,1e-3,2e-3,4e-3", "--out", str(proposal_path),
    ]) == 0
    proposal = json.loads(proposal_path.read_text())
    kinds = [g["kind"] for g in proposal["groups"]]
    assert kinds == ["hyperparameters", "compute_optimal"]
    assert {r["series"] for r in proposal["runs"]} == {"heldout", "compute_optimal"}
    assert all(r["milestones_tokens"] == sorted(r["milestones_tokens"]) for r in proposal["runs"])
    compute_group = proposal["groups"][1]
    assert compute_group["size"] == "tiny-262k"
    assert compute_group["law_optimal_parameters"] == pytest.approx(262144)

    # stand-in for training the proposed runs: draw them from the same truth
    table = pd.concat([pd.read_csv(fitted["runs"]), synthetic_proposal_runs(proposal, TRUTH, DESIGN)], ignore_index=True)
    runs = tmp_path / "runs_with_heldout.csv"
    table.to_csv(runs, index=False)
    out = tmp_path / "heldout.json"
    capsys.readouterr()
    assert heldout_main(["--runs", str(runs), "--laws", str(fitted["laws"]), "--proposal", str(proposal_path), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    hyper, compute = result["groups"]
    assert hyper["status"] == "evaluated" and hyper["predicted_cell_is_best"] is True
    assert abs(hyper["relative_error"]) < 0.01 and abs(compute["relative_error"]) < 0.01
    assert "provenance" in result
    assert "predicted cell best: True" in capsys.readouterr().out


def test_a_heldout_run_that_diverged_bounds_the_measured_optimum(fitted, tmp_path):
    """A proposed run that diverged before the held-out budget is an unstable cell of its group, as a fitting size's is:
    it has no loss, and it counts as a measured side of the optimum next to it."""
    proposal_path = tmp_path / "proposal.json"
    assert propose_main(["--laws", str(fitted["laws"]), "--size", "tiny-262k", "--tokens", str(2**24), "--batch-clips", "8", "16",
                         "32", "--learning-rates", "5e-4,1e-3,2e-3,4e-3", "--out", str(proposal_path)]) == 0
    proposal = json.loads(proposal_path.read_text())
    drawn = synthetic_proposal_runs(proposal, TRUTH, DESIGN)
    group = drawn[drawn["series"] == "heldout"]
    fastest = group[group["batch_clips"] == group.sort_values("validation_loss").iloc[0]["batch_clips"]]
    victim = fastest.sort_values("learning_rate").iloc[-1]["run_id"]  # the highest rate beside the best cell
    first = drawn.loc[drawn["run_id"] == victim, "tokens"].min()
    drawn.loc[drawn["run_id"] == victim, ["status", "status_reason"]] = ["diverged", "loss above 10.0"]
    drawn = drawn[~((drawn["run_id"] == victim) & (drawn["tokens"] > first))]
    runs, out = tmp_path / "runs.csv", tmp_path / "heldout.json"
    pd.concat([pd.read_csv(fitted["runs"]), drawn], ignore_index=True).to_csv(runs, index=False)
    assert heldout_main(["--runs", str(runs), "--laws", str(fitted["laws"]), "--proposal", str(proposal_path), "--out", str(out)]) == 0
    hyper = json.loads(out.read_text())["groups"][0]
    cell, = (c for c in hyper["cells"] if c["run_id"] == victim)
    assert cell["loss"] is None and cell["unstable"] is True
    assert victim not in hyper["runs"] and [e["run_id"] for e in hyper["excluded_runs"]] == [victim]
    stable = [c for c in hyper["cells"] if not c["unstable"]]
    best = min(stable, key=lambda c: c["loss"])
    assert best["learning_rate"] < cell["learning_rate"] and best["batch_clips"] == cell["batch_clips"]
    assert hyper["measured_optimum"]["interior"]["learning_rate"] is True
    facts = tmp_path / "facts.json"
    assert facts_main(["--laws", str(fitted["laws"]), "--runs", str(runs), "--heldout", str(out), "--out", str(facts)]) == 0
    test = json.loads(facts.read_text())["claims"]["claim_3b"]["tests"][0]  # the unstable cell is no loss to compare
    predicted, tokens_per_clip = hyper["predicted_cell"], fitted["document"]["setup"]["context_tokens"]
    others = [c["loss"] for c in stable if (c["batch_clips"] * tokens_per_clip, c["learning_rate"])
              != (predicted["batch_tokens"], predicted["learning_rate"])]
    assert test["value"] == pytest.approx(min(others) / predicted["measured_loss"] - 1, rel=1e-12)


def _proposal(fitted, tmp_path, *options) -> dict:
    out = tmp_path / f"proposal-{len(list(tmp_path.glob('proposal-*')))}.json"
    assert propose_main(["--laws", str(fitted["laws"]), "--batch-clips", "8", "16", "32",
                         "--learning-rates", "5e-4,1e-3,2e-3,4e-3", "--out", str(out), *options]) == 0
    return json.loads(out.read_text())


def _nearest_index(values, predicted) -> int:
    return int(np.argmin(np.abs(np.log(np.asarray(values, float)) - np.log(predicted))))


def test_proposal_flags(fitted, tmp_path, capsys):
    """--neighbours box, --milestones, --seed, --no-compute-optimal, --compute-flops with --family and
    --max-compute-tokens, each against what it asks for; an unknown size is refused."""
    batches, rates = [4, 8, 16, 32, 64], [2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3]  # the grid, one step added each end
    box = _proposal(fitted, tmp_path, "--size", "tiny-262k", "--tokens", str(2**23), "--neighbours", "box",
                    "--milestones", "1048576", "4194304", "8388608", "--seed", "3", "--no-compute-optimal")
    group, = box["groups"]
    i = _nearest_index(batches, group["predicted"]["batch_clips"])
    j = _nearest_index(rates, group["predicted"]["learning_rate"])
    expected = {(batches[a], rates[b]) for a in (i - 1, i, i + 1) for b in (j - 1, j, j + 1)
                if 0 <= a < len(batches) and 0 <= b < len(rates)}
    assert {(c["batch_clips"], c["learning_rate"]) for c in group["cells"]} == expected
    assert len(box["runs"]) == len(expected) and {r["series"] for r in box["runs"]} == {"heldout"}
    for run in box["runs"]:
        assert run["seed"] == 3 and "run_id" not in run  # the pipeline names runs (pipeline.runs)
        assert run["milestones_tokens"] == [1048576, 4194304, 8388608]

    flops = 3e16
    capped = _proposal(fitted, tmp_path, "--compute-flops", str(flops), "--family", "tiny", "--max-compute-tokens", "1e6")
    compute, = capped["groups"]
    assert compute["kind"] == "compute_optimal" and compute["tokens"] == 1e6
    law_n = compute["law_optimal_parameters"]
    nearest = min(sizes_in_family("tiny"), key=lambda s: abs(np.log(s.non_embedding_parameters / law_n)))
    assert compute["size"] == nearest.name
    size = get_size(nearest.name)
    per_token = 0.75 * size.non_embedding_parameters * (7 + DESIGN.tokens_per_clip / size.width)  # the paper's C_token
    assert compute["flops"] == pytest.approx(1e6 * per_token, rel=1e-9)  # the budget shrinks with the capped tokens
    assert any("capped at --max-compute-tokens" in w for w in capped["warnings"])
    capsys.readouterr()
    assert propose_main(["--laws", str(fitted["laws"]), "--size", "tiny-huge", "--batch-clips", "8", "16",
                         "--learning-rates", "1e-3", "2e-3", "--out", str(tmp_path / "bad.json")]) == 2
    assert "unknown size(s) tiny-huge" in capsys.readouterr().err and not (tmp_path / "bad.json").exists()


def test_compute_size_sets_the_held_out_budget_where_the_laws_choose_that_size(fitted, tmp_path):
    """--compute-size NAME: the compute-optimal run is NAME, at the budget C where the fitted N_opt(C) equals
    its N, trained for C / C_token tokens; without the flag the first --size takes that role."""
    laws = LawSet(read_laws(fitted["laws"]))
    for options, name in ((("--compute-size", "tiny-590k"), "tiny-590k"), ((), "tiny-262k")):
        proposal = _proposal(fitted, tmp_path, "--size", "tiny-262k", "--tokens", str(2**23), *options)
        compute = next(group for group in proposal["groups"] if group["kind"] == "compute_optimal")
        size = get_size(name)
        assert compute["size"] == name and compute["law_optimal_parameters"] == size.non_embedding_parameters
        assert laws.optimal_parameters(compute["flops"]) == pytest.approx(size.non_embedding_parameters, rel=1e-6)  # bisection
        per_token = 0.75 * size.non_embedding_parameters * (7 + DESIGN.tokens_per_clip / size.width)  # the paper's C_token
        assert compute["tokens"] == pytest.approx(compute["flops"] / per_token, rel=1e-9)
        run, = (r for r in proposal["runs"] if r["series"] == "compute_optimal")
        assert run["size"] == name and (run["batch_clips"], run["learning_rate"]) == tuple(compute["nearest_cell"].values())


def test_too_few_runs_is_a_clear_error(tmp_path, capsys):
    design = SyntheticDesign(fitting_sizes=["tiny-8k"], heldout_sizes=[], noise_seeds=0, include_failures=False)
    runs = tmp_path / "runs.csv"
    synthetic_runs(TRUTH, design).to_csv(runs, index=False)
    out = tmp_path / "laws.json"
    assert fit_main(["--runs", str(runs), "--out", str(out), "--bootstrap-resamples", "0", "--quiet"]) == 3
    message = capsys.readouterr().err
    assert "too few completed runs" in message
    assert "loss_optimal: not enough data" in message and "1 distinct N (need 2)" in message
    assert not out.exists()
    assert fit_main(["--runs", str(runs), "--out", str(out), "--bootstrap-resamples", "0", "--quiet", "--allow-partial"]) == 0
    document = json.loads(out.read_text())
    assert document["laws"]["loss_optimal"]["status"] == "not fitted"
    assert "1 distinct N" in document["laws"]["loss_optimal"]["reason"]


def test_config_errors_name_the_key(fitted, tmp_path, capsys):
    out = tmp_path / "laws.json"
    assert fit_main(["--runs", str(fitted["runs"]), "--out", str(out), "--flop-convention", "7n"]) == 2
    assert "flop_convention: '7n' is not one of paper, 6n" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("bootstrap_resample: 10\n")
    assert fit_main(["--runs", str(fitted["runs"]), "--config", str(bad), "--out", str(out)]) == 2
    assert "unknown fit-config key(s) bootstrap_resample" in capsys.readouterr().err
    assert fit_main(["--print-config"]) == 0
    defaults = yaml.safe_load(capsys.readouterr().out)
    assert defaults["bootstrap_resamples"] == 1000 and defaults["inference"]["sampling_steps"] == 50


def table_row(text: str, label: str) -> list[str]:
    """The cells of the markdown table row whose first cell is ``label``."""
    line = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def grid_spreads(runs: pd.DataFrame, budgets) -> list[float]:
    """Per fitting size and budget: max / min - 1 of the grid runs' validation loss at the milestone nearest
    the budget (the synthetic runs reach each milestone within one step); a run that diverged counts at the
    milestones it reached."""
    spreads = []
    for _, size_runs in runs[(runs["series"] == "grid") & runs["status"].isin(["completed", "diverged"])].groupby("size"):
        if size_runs["size"].iloc[0] in DESIGN.heldout_sizes:
            continue
        for budget in budgets:
            losses = []
            for _, run in size_runs.groupby("run_id"):
                nearest = run.iloc[int(np.argmin(np.abs(np.log(run["tokens"] / budget))))]
                if abs(np.log(nearest["tokens"] / budget)) < 0.05:
                    losses.append(nearest["validation_loss"])
            spreads.append(max(losses) / min(losses) - 1)
    return spreads


def test_summary_shows_the_fitted_numbers_beside_the_papers(fitted, tmp_path):
    spread = tmp_path / "spread.json"
    spread.write_text(json.dumps({"mean": 0.5, "std": 1e-4, "relative_std": 2e-4, "seeds": [0, 1, 2, 3]}))
    facts_path, out = tmp_path / "facts.json", tmp_path / "summary.md"
    assert facts_main(["--laws", str(fitted["laws"]), "--runs", str(fitted["runs"]), "--protocol-spread", str(spread),
                       "--out", str(facts_path)]) == 0
    assert report_main(["--facts", str(facts_path), "--summary", str(out)]) == 0
    text = out.read_text()
    document = fitted["document"]

    alpha = table_row(text, "L(N, T): T exponent alpha")
    assert float(alpha[1].split()[0]) == pytest.approx(document["laws"]["loss_optimal"]["parameters"]["alpha"], rel=5e-4)
    assert float(alpha[1].split()[0]) == pytest.approx(TRUTH.loss["alpha"], abs=0.015)
    assert float(alpha[2]) == 0.2917  # the paper's printed exponent
    reduction = table_row(text, "model-size reduction 1 - N_precise / N_conventional")
    assert reduction[1].startswith(f"{100 * document['comparison']['model_size_reduction']['value']:.1f}% [")
    assert reduction[2] == f"{100 * (1 - 2.43 / 4.04):.1f}%"  # the paper's 2.43B vs 4.04B at 1e22 FLOPs

    # Claim 2 against the grid's own spreads and Tukey's studentized range, computed here from the runs table
    runs = pd.read_csv(fitted["runs"])
    spreads = grid_spreads(runs, document["setup"]["budgets_tokens"])
    noise = document["setup"]["noise"]
    sigma = noise["relative_std"]
    budgets_with_noise = sum(b["relative_std"] is not None for b in noise["detail"]["relative_std_by_budget"])
    dof = sum(g["seeds"] - 1 for g in noise["detail"]["groups"]) * budgets_with_noise
    q = studentized_range.ppf(0.95, len(DESIGN.batch_clips) * len(DESIGN.learning_rates), dof)
    assert len(spreads) == len(DESIGN.fitting_sizes) * len(DESIGN.milestones_tokens)
    expected = from_interval([np.median(spreads) - q * sigma, np.median(spreads) + q * sigma])
    claim = next(line for line in text.splitlines() if line.startswith("- **Claim 2,"))
    assert claim.startswith(f"- **Claim 2, the loss is very sensitive to batch size B and learning rate LR: {expected}.**")
    shown = re.search(r"exceeds the best cell's by ([\d.]+)% \(median over (\d+) size-budget pairs", claim)
    assert int(shown.group(2)) == len(spreads)
    assert float(shown.group(1)) == pytest.approx(100 * np.median(spreads), rel=0.02)

    assert "- Held-out runs' evaluation (`python -m analysis.heldout`): not given." in text  # an input left out says so
    assert "%%" not in text and "nan" not in text.lower() and "None" not in text
    assert f"`{fitted['laws']}`" in text and f"`{fitted['runs']}`" in text  # where the numbers come from


def test_bootstrap_of_a_fit_on_its_bound_gives_conditional_intervals_not_nan():
    """Real data often puts L_inf on its bound 0; its resamples do too. They are kept (the intervals say so), and
    with too few usable resamples the record gives the reason instead of [nan, nan]."""
    from analysis.law_fits import LawData, bootstrap_law, fit_full_data, law_record
    from analysis.law_forms import LOSS_LAW

    n = np.repeat([8.192e-6, 1.8432e-5, 3.2768e-5], 3)
    t = np.tile([8.192e-6, 1.6384e-5, 3.2768e-5], 3)
    rng = np.random.default_rng(8)
    base = LOSS_LAW.predict({"a": 0.01, "alpha": 0.5, "b": 0.02, "beta": 0.3, "L_inf": -0.3}, N=n, T=t)
    observed = base * (1 + 0.004 * rng.standard_normal(9))

    def record(resamples):
        weights = np.ones((resamples + 1, 9))
        weights[1:] = rng.multinomial(9, np.full(9, 1 / 9), size=resamples)
        data = LawData("loss_optimal", LOSS_LAW, {"N": n, "T": t}, np.broadcast_to(observed, weights.shape).copy(), weights, 1e-3,
                       [{"point": i} for i in range(9)], ["run"], "test points", {"N": 2, "T": 2})
        fit = fit_full_data(data)
        bootstrap_law(fit)
        return law_record(fit, 0.95)

    many = record(30)
    assert many["fit"]["on_bound"] == ["L_inf"]
    assert many["bootstrap"]["held_at_bound"] == ["L_inf"] and "conditional on that bound" in many["bootstrap"]["note"]
    assert many["bootstrap"]["usable"] >= 25
    for name in ("alpha", "beta", "a", "b"):
        low, high = many["intervals"][name]
        assert np.isfinite(low) and np.isfinite(high) and low <= high
    one = record(1)
    assert one["intervals"] == {} and one["bootstrap"]["no_interval_reason"].startswith("only 1 of 1 resamples usable")


def _texts(fig):
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def test_figures_of_degenerate_or_missing_laws_say_so(fitted):
    """A law that is not fitted draws no curve and a 'not fitted' caveat; degenerate and edge-only laws get a caveat."""
    import copy

    document = copy.deepcopy(fitted["document"])
    document["laws"]["loss_optimal"] = {"status": "not fitted", "reason": "not enough data: 1 distinct N (need 2)"}
    document["laws"]["loss_conventional"]["fit"].update(on_bound=["beta"], guard_bounds=["beta"])
    document["laws"]["batch_size"]["edge_points"] = {"used_on_edge": 30, "used": 30, "policy": "include"}

    def caveat(fig):
        return " ".join(t.get_text() for t in _texts(fig) if t.get_text().startswith("Caveat:")).replace("\n", " ")

    fig = figures.runs_loss_vs_tokens(document)
    text = caveat(fig)
    assert "loss_optimal: not fitted (not enough data: 1 distinct N (need 2))" in text
    assert "loss_conventional: beta ended on a bound of the optimiser (degenerate fit)" in text
    solid = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "-" and len(line.get_xdata()) > 3]
    assert not solid  # no curve of the law that was not fitted
    fig = figures.runs_loss_law(document)
    assert "no law curves drawn" in caveat(fig)
    assert not [line for line in fig.axes[0].get_lines() if len(line.get_xdata()) > 10]
    assert "batch_size: every optimum used lies on the grid's edge" in caveat(figures.runs_heatmaps(document, fitted["facts"]))
    assert "precise N_opt law not fitted" not in caveat(figures.runs_compute_optimal(document))  # compute record unchanged
    assert "loss_conventional" in caveat(figures.runs_compute_optimal(document))
    fig = figures.exponents_of_runs(document)
    assert sum(t.get_text() == "not fitted" for t in _texts(fig)) == 2  # alpha and beta of the missing loss law
    # the untouched document needs no caveat, nor does L_inf at its floor 0, a bound of the model (the constrained estimate)
    assert caveat(figures.runs_loss_vs_tokens(fitted["document"])) == ""
    floored = copy.deepcopy(fitted["document"])
    floored["laws"]["loss_conventional"]["fit"].update(on_bound=["L_inf"], guard_bounds=[])
    assert caveat(figures.runs_loss_vs_tokens(floored)) == ""
    figures.plt.close("all")


@pytest.mark.slow  # 10 figures laid out: about 5 s
def test_figures_are_readable_at_column_width(fitted):
    document, facts = fitted["document"], fitted["facts"]
    built = [figures.runs_loss_vs_tokens(document), figures.runs_heatmaps(document, facts), figures.runs_loss_law(document),
             figures.runs_compute_optimal(document), figures.exponents_of_runs(document), figures.paper_loss_vs_tokens(),
             figures.paper_heatmaps(facts), figures.paper_loss_law(), figures.paper_compute_optimal(facts), figures.paper_exponents()]
    for fig in built:
        assert fig.get_figwidth() == pytest.approx(figures.COLUMN_WIDTH)
        assert min(t.get_fontsize() for t in _texts(fig)) >= 5.0
        # nothing drawn past the figure's left or right edge (titles wrapped, legends fit), in inches
        fig.canvas.draw()  # applies the constrained layout
        drawn = fig.get_tightbbox(fig.canvas.get_renderer())
        assert drawn.x0 >= -0.03 and drawn.x1 <= fig.get_figwidth() + 0.03  # 1% slack: a tick label touching the edge
        for axis in fig.axes:
            if axis.get_label() != "<colorbar>" and axis.get_xlabel():
                assert "(" in axis.get_xlabel()  # unit or kind in brackets
        figures.plt.close(fig)


def test_batch_optima_below_the_grid_are_a_finding_and_the_proposal_takes_the_edge(tmp_path, capsys):
    """Every batch of the grid is larger than the true optimum (4x to 16x the truth's largest B_opt here), so
    every measured batch optimum sits at the smallest batch: the batch-size law is not fitted (claim 3a's batch
    law is then not tested), the fit still succeeds, and the held-out proposal takes the edge batch with the
    learning-rate law's rate."""
    design = SyntheticDesign(batch_clips=[256, 512, 1024], heldout_sizes=[], include_failures=False)
    runs = tmp_path / "runs.csv"
    table = synthetic_runs(TRUTH, design, seed=0)
    table.to_csv(runs, index=False)
    largest_truth = max(TRUTH.optimal_batch_tokens(get_size(s).non_embedding_parameters / 1e9, t / 1e9)
                        for s in design.fitting_sizes for t in design.milestones_tokens)
    smallest = 256 * design.tokens_per_clip
    assert smallest > 4 * largest_truth
    laws = tmp_path / "laws.json"
    assert fit_main(["--runs", str(runs), "--out", str(laws), "--bootstrap-resamples", "0", "--quiet"]) == 0
    document = json.loads(laws.read_text())
    batch = document["laws"]["batch_size"]
    assert batch["status"] == "not fitted" and "edge" in batch["reason"]
    edge = batch["edge_points"]
    optima = len(design.fitting_sizes) * len(design.milestones_tokens)
    assert edge["optima"] == optima and edge["on_edge"] == edge["at_smallest_batch"] == optima
    assert edge["at_largest_batch"] == 0 and edge["edge_batch_tokens"] == smallest
    assert document["laws"]["learning_rate"]["status"] == "fitted"

    out = tmp_path / "proposal.json"
    assert propose_main(["--laws", str(laws), "--size", "tiny-262k", "--tokens", str(design.milestones_tokens[-1]),
                         "--batch-clips", *map(str, design.batch_clips), "--learning-rates", *map(str, design.learning_rates),
                         "--out", str(out)]) == 0
    proposal = json.loads(out.read_text())
    group = proposal["groups"][0]
    n_b, t_b = get_size("tiny-262k").non_embedding_parameters / 1e9, design.milestones_tokens[-1] / 1e9
    rate = document["laws"]["learning_rate"]["parameters"]
    assert group["predicted"]["batch_source"] == "grid_edge" and group["predicted"]["batch_tokens"] == smallest
    assert group["predicted"]["learning_rate"] == pytest.approx(rate["a"] * t_b ** rate["b"] * n_b ** rate["c"], rel=1e-9)
    assert group["nearest_cell"]["batch_clips"] == 256
    assert any("batch-size law was not fitted" in warning for warning in proposal["warnings"])


def test_optima_at_one_clip_count_as_found_for_the_loss_law(tmp_path):
    """With one clip per step as the smallest batch and every batch-size optimum there, the loss law's optima are
    not on an edge (one clip is the smallest batch there is), while the batch-size law still is not fitted."""
    design = SyntheticDesign(batch_clips=[1, 2, 4], tokens_per_clip=65536, conventional_cell=(2, 1e-3), heldout_sizes=[],
                            include_failures=False)
    runs = tmp_path / "runs.csv"
    synthetic_runs(TRUTH, design, seed=0).to_csv(runs, index=False)
    assert max(TRUTH.optimal_batch_tokens(get_size(s).non_embedding_parameters / 1e9, t / 1e9)
               for s in design.fitting_sizes for t in design.milestones_tokens) < design.tokens_per_clip / 4
    laws = tmp_path / "laws.json"
    assert fit_main(["--runs", str(runs), "--out", str(laws), "--bootstrap-resamples", "0", "--quiet"]) == 0
    document = json.loads(laws.read_text())
    points = len(design.fitting_sizes) * len(design.milestones_tokens)
    assert document["laws"]["batch_size"]["edge_points"]["at_smallest_batch"] == points
    loss = document["laws"]["loss_optimal"]["edge_points"]
    learning_rate_edges = sum(not optimum["interior_learning_rate"] for optimum in document["optima"])
    assert loss["at_one_clip_batch"] == points and loss["on_edge"] == learning_rate_edges < points


def test_the_evaluated_models_of_a_proposal(fitted, tmp_path):
    """The evaluations read the largest held-out size at its predicted cell and the compute-optimal run, when there is one."""
    from pipeline.runs import EVALUATED_MODELS, evaluated_run

    common = ["--laws", str(fitted["laws"]), "--size", "tiny-262k", "--tokens", str(2**24), "--batch-clips", "8", "16", "32",
              "--learning-rates", "5e-4,1e-3,2e-3,4e-3"]
    with_run, without = tmp_path / "with.json", tmp_path / "without.json"
    assert propose_main([*common, "--out", str(with_run)]) == 0
    assert propose_main([*common, "--no-compute-optimal", "--out", str(without)]) == 0
    proposal = json.loads(with_run.read_text())
    cell = next(g for g in proposal["groups"] if g["kind"] == "hyperparameters")["nearest_cell"]
    largest = evaluated_run(with_run, "largest")
    assert (largest.series, largest.size, largest.batch_clips) == ("heldout", "tiny-262k", cell["batch_clips"])
    assert largest.learning_rate == pytest.approx(cell["learning_rate"])
    (record,) = [r for r in proposal["runs"] if r["series"] == "compute_optimal"]
    optimal = evaluated_run(with_run, "compute_optimal")
    assert (optimal.series, optimal.size, optimal.milestones_tokens) == ("compute_optimal", record["size"],
                                                                         tuple(record["milestones_tokens"]))
    assert evaluated_run(without, "compute_optimal") is None and evaluated_run(without, "largest") == largest
    assert EVALUATED_MODELS == ("largest", "compute_optimal")
    with pytest.raises(ValueError, match="unknown evaluated model 'smallest'"):
        evaluated_run(with_run, "smallest")


def test_held_out_cells_with_several_seeds_are_compared_as_their_means(fitted, tmp_path):
    """heldout.seeds_per_cell: every proposed cell (and the compute-optimal run) gets one run per seed; the check
    compares each cell's mean loss, and its prediction interval and claim 3b's margin take a mean's noise."""
    from analysis import claims

    seeds = [0, 1000, 2000]
    common = ["--laws", str(fitted["laws"]), "--size", "tiny-262k", "--tokens", str(2**24), "--batch-clips", "8", "16", "32",
              "--learning-rates", "5e-4,1e-3,2e-3,4e-3"]
    proposal_path = tmp_path / "proposal.json"
    assert propose_main([*common, "--seed", *map(str, seeds), "--out", str(proposal_path)]) == 0
    proposal = json.loads(proposal_path.read_text())
    hyper_cells = proposal["groups"][0]["cells"]
    assert len(proposal["runs"]) == (len(hyper_cells) + 1) * len(seeds)
    for group, cells in ((0, hyper_cells), (1, proposal["groups"][1]["cells"])):
        for cell in cells:
            assert sorted(r["seed"] for r in proposal["runs"] if r["group"] == group and r["batch_clips"] == cell["batch_clips"]
                          and r["learning_rate"] == cell["learning_rate"]) == seeds
    assert propose_main([*common, "--seed", "0", "0", "--out", str(tmp_path / "twice.json")]) == 2

    drawn = synthetic_proposal_runs(proposal, TRUTH, DESIGN)
    table = pd.concat([pd.read_csv(fitted["runs"]), drawn], ignore_index=True)
    runs = tmp_path / "runs.csv"
    table.to_csv(runs, index=False)
    out = tmp_path / "heldout.json"
    assert heldout_main(["--runs", str(runs), "--laws", str(fitted["laws"]), "--proposal", str(proposal_path), "--out", str(out)]) == 0
    hyper, compute = json.loads(out.read_text())["groups"]
    assert hyper["replicates"] == compute["replicates"] == len(seeds)
    tokens = hyper["tokens"]
    at_budget = drawn[np.isclose(drawn["tokens"], tokens)]
    for cell in hyper["cells"]:
        rows = at_budget[at_budget["run_id"].isin(cell["runs"])]
        assert len(rows) == len(seeds) and set(rows["seed"]) == set(seeds)
        assert cell["loss"] == pytest.approx(rows["validation_loss"].mean(), rel=1e-12)
    compute_rows = drawn[(drawn["series"] == "compute_optimal") & np.isclose(drawn["tokens"], compute["tokens"], rtol=1e-3)]
    assert len(compute_rows) == len(seeds)  # the budget lies a rounding step from the runs' last milestone: interpolated
    assert compute["measured_loss"] == pytest.approx(compute_rows["validation_loss"].mean(), rel=1e-4)

    laws = LawSet(read_laws(fitted["laws"]), level=0.9, seed=0)
    laws.evaluate_samples = lambda *args, **kwargs: None  # no bootstrap samples: the interval is the noise's alone
    one, three = (laws.loss_prediction(hyper["N"], tokens / 1e9, replicates=k)["prediction_interval"] for k in (1, 3))
    assert (three[1] - three[0]) == pytest.approx((one[1] - one[0]) / np.sqrt(3))

    # claim 3b's margin is resampled with the group's runs: the noise of a difference of two means of 3 runs,
    # sqrt(2 / 3) sigma (about; less where several cells compete for the minimum), not one run's sqrt(2) sigma
    run_sigma = laws.noise_relative_std
    spread = float(np.std(np.array(hyper["margin_resamples"], dtype=float)))
    assert 0.5 * np.sqrt(2 / 3) * run_sigma < spread < 1.3 * np.sqrt(2 / 3) * run_sigma < np.sqrt(2) * run_sigma
    checked = claims.heldout_cells({"groups": [hyper]}, run_sigma, 0.9, 64)["groups"][0]
    q_low, q_high = np.percentile(hyper["margin_resamples"], [5, 95])
    assert checked["margin_interval"] == pytest.approx([2 * checked["margin"] - q_high, 2 * checked["margin"] - q_low])
