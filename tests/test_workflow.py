"""The Snakemake pipeline (Snakefile, workflow/rules/*.smk) on one machine.

Fast: ``snakemake --lint``, the DAG of each config (training jobs counted) and of the ``bench`` target,
an invalid config stopped before any job with the bad key named (tests/test_pipeline_config.py checks
every key in-process). Slow (``smoke_run``, tests/conftest.py): the tests' smoke config run end to end
and its outputs checked for content, diverged runs carried through to the runs table and the fits'
exclusions, the HTML report, a changed grid value rerunning only what it touches, a SIGKILLed run that
resumes on rerun with the numbers of an uninterrupted one, and a failed run that stops only its branch.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LOCAL_PROFILE, REPOSITORY_ROOT, copy_data, planned_jobs, read_losses, run_bounded, workflow_environment
from pipeline.config import model_tokens_per_clip
from pipeline.runs import grid_runs, heldout_seeds, job_cost, training_jobs

DRY_RUN_TIMEOUT_S = 120
KILL_RUN_TIMEOUT_S = 600
RUNS_TABLE_COLUMNS = (
    "run_id", "series", "status", "status_reason", "size", "non_embedding_parameters", "width", "depth", "heads",
    "tokens_per_clip", "batch_clips", "batch_tokens", "learning_rate", "seed", "step", "tokens", "flops",
    "flops_6n", "train_loss", "validation_loss",
)
CORE_LAWS = ("loss_optimal", "batch_size", "learning_rate")
# Sections summary.md must have: a level-2 heading that starts with each of these (case-insensitive).
SUMMARY_SECTIONS = ("Laws", "Precise vs conventional", "Held-out", "Verdict", "Data reuse", "Stage timings")


def expected_grid_jobs(config: dict) -> int:
    """Training jobs before the held-out stage. With ensembles (the default) one per (size, batch) of the grid:
    its learning rates, and the noise-floor seeds at a cell of that size and batch, train together. With
    ``training.ensemble: off`` one per run: every (size, batch, lr) cell plus the noise-floor seeds.

    (Every config here has its conventional cell and its noise cells on the grid, so they add no jobs.)
    """
    grid = config["grid"]
    if config["training"].get("ensemble", "auto") == "off":
        cells = len(grid["sizes"]) * len(grid["batch_clips"]) * len(grid["learning_rates"])
        return cells + len(config["noise"]["cells"]) * len(config["noise"]["seeds"])
    return len(grid["sizes"]) * len(grid["batch_clips"])


def grid_job_ids(config: dict) -> set[str]:
    """The job ids of the grid stage, derived here from the config (not from pipeline.runs)."""
    if config["training"].get("ensemble", "auto") == "off":
        return grid_run_ids(config)
    return {f"grid/{size}/b{batch}" for size in config["grid"]["sizes"] for batch in config["grid"]["batch_clips"]}




def grid_run_ids(config: dict) -> set[str]:
    from pipeline.runs import grid_runs

    return {run.run_id for run in grid_runs(config)}


def diverging_run_ids(config: dict) -> set[str]:
    """config/test.yaml's noise-floor runs at a learning rate above the whole grid's (they diverge within
    their first steps, before the first milestone)."""
    from pipeline.runs import grid_runs

    highest = max(config["grid"]["learning_rates"])
    return {run.run_id for run in grid_runs(config) if run.series == "noise" and run.learning_rate > 10 * highest}


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def is_finite_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def train_wildcards(run) -> set[str]:
    """The grid_job wildcard of every train_grid job block in a snakemake output."""
    return {job.wildcards.removeprefix("grid_job=") for job in run.jobs() if job.rule == "train_grid"}


# ------------------------------------------------------------------ fast: lint, DAGs, config errors


def test_lint_is_clean():
    result = run_bounded([sys.executable, "-m", "snakemake", "--lint"], timeout_s=DRY_RUN_TIMEOUT_S)
    assert result.returncode == 0, result.tail()
    assert "Congratulations, your workflow is in a good condition!" in result.output, result.tail()


@pytest.mark.parametrize(
    "source, ensemble, grid_jobs",
    [pytest.param("config", "auto", 5 * 3, marks=pytest.mark.slow), ("smoke", "auto", 3 * 2), ("test", "auto", 3 * 2),
     ("test", "off", 3 * 2 * 3 + 2 * 2), pytest.param("paper", "auto", 4 * 3, marks=pytest.mark.slow)],
)
def test_dry_run_builds_the_expected_dag(source, ensemble, grid_jobs, make_pipeline, tmp_path):
    overrides = {"training": {"ensemble": ensemble}}
    if source == "paper":
        (tmp_path / "videos").mkdir()  # the paper config reads a folder of the user's videos
        overrides["data"] = {"source": str(tmp_path / "videos")}
    pipeline = make_pipeline(tmp_path, source, overrides)
    assert expected_grid_jobs(pipeline.config) == grid_jobs

    result = pipeline.run("--dry-run", "--cores", "2", timeout_s=DRY_RUN_TIMEOUT_S)
    assert result.returncode == 0, result.tail()
    counts = result.job_counts()
    assert counts["train_grid"] == grid_jobs, counts
    generated = 1 if pipeline.config["data"]["source"] is None else 0
    assert counts.get("generate_data", 0) == generated, counts
    for rule in ("prepare_data", "fit_config", "collect_grid_runs", "fit_grid", "propose_heldout", "all"):
        assert counts[rule] == 1, (rule, counts)
    # The held-out runs depend on the fitted laws: they appear only once the checkpoint has run.
    assert "train_heldout" not in counts, counts
    planned = train_wildcards(result)
    assert planned == grid_job_ids(pipeline.config)
    processes = f"processes={pipeline.config['training']['processes']}"  # torchrun processes per run (8 GPUs: paper)
    assert all(processes in job.resources.split(", ") for job in result.jobs() if job.rule == "train_grid"), processes
    assert all(
        "Missing output files" in job.reason for job in result.jobs() if job.rule == "train_grid"
    ), "every training job of a fresh workdir must be planned because its outputs are missing"
    # The costliest jobs start first: each job's priority is its estimated seconds.
    jobs = {job.job_id: job for job in training_jobs(grid_runs(pipeline.config), ensemble)}
    tokens = model_tokens_per_clip(pipeline.config)
    priorities = {job.wildcards.removeprefix("grid_job="): job.priority for job in result.jobs() if job.rule == "train_grid"}
    assert priorities == {job_id: round(job_cost(jobs[job_id], tokens), 1) for job_id in planned}
    assert not pipeline.workdir.exists(), "a dry run must not create the workdir"


def test_noise_sources_plans_one_study_per_noise_cell_on_that_cells_training_config(make_pipeline, tmp_path):
    import shlex

    from pipeline.runs import grid_runs

    pipeline = make_pipeline(tmp_path, "test", {"noise": {"sources": {"seeds": 4}}})
    result = pipeline.run("--dry-run", "--printshellcmds", "--cores", "2", "noise_sources", timeout_s=DRY_RUN_TIMEOUT_S)
    assert result.returncode == 0, result.tail()
    cells = pipeline.config["noise"]["cells"]
    assert result.job_counts().get("noise_sources_cell") == len(cells), result.job_counts()
    commands = [shlex.split(line.partition(": ")[2]) for line in result.output.splitlines() if line.startswith("Shell command: python -m dit.noise_sources")]
    assert len(commands) == len(cells)
    runs = grid_runs(pipeline.config)
    for command in commands:
        study = json.loads(command[command.index("--config-json") + 1])
        assert command[command.index("--seeds") + 1] == "4"
        same_cell = [r for r in runs if r.run_id == study["run"]["id"]]
        assert same_cell and any(
            (r.size, r.batch_clips) == (c["size"], c["batch_clips"]) and math.isclose(r.learning_rate, c["learning_rate"])
            for r in same_cell for c in cells)
        assert study["model"]["size"] == same_cell[0].size and study["batch"]["global_clips"] == same_cell[0].batch_clips
        assert study["optimizer"]["lr"] == pytest.approx(same_cell[0].learning_rate)
        assert study["schedule"]["milestones_tokens"] == list(same_cell[0].milestones_tokens)


def test_invalid_config_stops_before_any_job_naming_the_key(make_pipeline, tmp_path):
    pipeline = make_pipeline(tmp_path, "test", {"heldout": {"sizes": ["tiny-18k"]}})
    result = pipeline.run("--dry-run", "--cores", "2", timeout_s=DRY_RUN_TIMEOUT_S)
    assert result.returncode != 0, result.tail()
    assert "invalid pipeline config: heldout.sizes[0]: tiny-18k is also a fitting size in grid.sizes" in result.output, result.tail()
    assert "Building DAG of jobs" not in result.output, "the config must be rejected before the DAG is built"
    assert not pipeline.workdir.exists()


def test_bench_target_plans_one_job_per_benchmark_file(make_pipeline, tmp_path):
    """``snakemake --cores all bench`` (not part of ``all``): a pytest-benchmark job per benchmarks/bench_*.py,
    its JSON under results/bench/."""
    pipeline = make_pipeline(tmp_path, "test")
    result = pipeline.run("--dry-run", "--printshellcmds", "--cores", "2", "bench", timeout_s=DRY_RUN_TIMEOUT_S)
    assert result.returncode == 0, result.tail()
    files = {path.stem.removeprefix("bench_") for path in (REPOSITORY_ROOT / "benchmarks").glob("bench_*.py")}
    assert result.job_counts() == {"bench_suite": len(files), "bench": 1}, result.job_counts()
    suites = {job.wildcards.removeprefix("suite=") for job in result.jobs() if job.rule == "bench_suite"}
    assert suites == files, "every benchmark file is a suite of the bench target"
    for suite in suites:
        assert f"--benchmark-json {pipeline.results}/bench/{suite}.json" in result.output, suite
        assert f"python -m pytest benchmarks/bench_{suite}.py --benchmark-only" in result.output, suite


# ------------------------------------------------------------------ slow: the smoke workflow, end to end


@pytest.mark.slow
def test_smoke_runs_table_has_every_run_at_every_milestone(smoke_run):
    rows = read_rows(smoke_run.results / "runs.csv")
    assert rows and set(RUNS_TABLE_COLUMNS) <= set(rows[0]), sorted(rows[0])
    from pipeline.runs import grid_runs, proposed_runs

    proposal = smoke_run.workdir / "analysis" / "proposal.json"
    planned = grid_runs(smoke_run.config) + proposed_runs(proposal)
    expected = {run.run_id: [] if run.run_id in diverging_run_ids(smoke_run.config) else list(run.milestones_tokens)
                for run in planned}
    assert {"heldout", "compute_optimal"} <= {run_id.split("/")[0] for run_id in expected}

    diverging = diverging_run_ids(smoke_run.config)
    assert len(diverging) == len(smoke_run.config["noise"]["seeds"]) == 2
    found: dict[str, list[int]] = {}
    for row in rows:
        if row["run_id"] in diverging:  # once, with the reason and no losses: no milestone was reached
            assert row["status"] == "diverged", row
            assert re.fullmatch(r"training loss \S+ at step \d \(above divergence\.max_loss=10\.0\)", row["status_reason"]), row
            assert row["milestone_tokens"] == row["train_loss"] == row["validation_loss"] == "" and row["tokens"] == "0", row
            found[row["run_id"]] = []
            continue
        found.setdefault(row["run_id"], []).append(int(row["milestone_tokens"]))
        assert row["status"] == "completed" and row["status_reason"] == "", row
        assert is_finite_number(row["train_loss"]) and is_finite_number(row["validation_loss"]), row
        assert 0 < float(row["validation_loss"]) < 2 and 0 < float(row["train_loss"]) < 2, row
        assert int(row["tokens"]) >= int(row["milestone_tokens"]), row
        assert int(row["batch_tokens"]) == int(row["batch_clips"]) * int(row["tokens_per_clip"]), row
        assert int(row["tokens"]) == int(row["step"]) * int(row["batch_tokens"]), row
        assert float(row["flops"]) > float(row["flops_6n"]) > 0, row
    assert found == expected, "runs.csv must hold each planned run once per milestone, in order"
    assert len(rows) == sum(max(len(m), 1) for m in expected.values())

    milestones = smoke_run.config["grid"]["milestones_tokens"]
    losses = {key: float(value[1]) for key, value in read_losses(smoke_run.results / "runs.csv").items()}
    cell = smoke_run.config["conventional"]
    conventional = [run for run in grid_runs(smoke_run.config) if run.series == "grid"
                    and run.batch_clips == cell["batch_clips"] and run.learning_rate == cell["learning_rate"]]
    assert len(conventional) == len(smoke_run.config["grid"]["sizes"])
    for run in conventional:
        summary = json.loads((smoke_run.run_dir(run.run_id) / "summary.json").read_text())
        assert summary["status"] == "completed", run.run_id
        assert summary["milestones_reached"] == summary["milestones_planned"] == len(milestones), run.run_id
        assert summary["provenance"]["config"]["run"]["id"] == run.run_id
        # At the conventional cell the validation loss falls from the first milestone to the last.
        assert losses[(run.run_id, milestones[-1])] < losses[(run.run_id, milestones[0])], run.run_id


@pytest.mark.slow
def test_diverged_runs_are_left_out_of_the_fits_with_their_reason(smoke_run):
    """README: a diverged run is recorded as diverged in results/runs.csv with that reason, and the pipeline goes on
    (the smoke run finished, its laws are fitted). The smoke config's diverging runs are noise-floor seeds that
    diverge before their first milestone: no fit uses them (a grid seed would count at the budgets it reached,
    tests/test_analysis_replicates.py)."""
    rows = {row["run_id"]: row for row in read_rows(smoke_run.results / "runs.csv")}
    document = json.loads((smoke_run.results / "laws.json").read_text())
    diverging = diverging_run_ids(smoke_run.config)
    excluded = {entry["run_id"]: entry for entry in document["runs"]["excluded"]}
    assert set(excluded) == diverging
    for run_id in diverging:
        summary = json.loads((smoke_run.run_dir(run_id) / "summary.json").read_text())
        assert summary["status"] == "diverged" and 0 < summary["steps"] < 8  # before the first milestone, 8 steps in
        assert excluded[run_id]["status"] == "diverged" and excluded[run_id]["milestones_reached"] == 0
        assert excluded[run_id]["reason"] == f"diverged: {rows[run_id]['status_reason']}" != "diverged: "
        assert rows[run_id]["status_reason"] == summary["status_reason"]
    for law in document["laws"].values():
        assert not diverging & set(law.get("runs", [])), "a diverged run was fitted"
    assert all(document["laws"][name]["status"] == "fitted" for name in CORE_LAWS)


@pytest.mark.slow
def test_smoke_laws_have_parameters_intervals_and_provenance(smoke_run):
    document = json.loads((smoke_run.results / "laws.json").read_text())
    laws = document["laws"]
    for name in CORE_LAWS + ("loss_conventional",):
        law = laws[name]
        assert law["status"] == "fitted", (name, law.get("reason"))
        parameters = law["parameters"]
        assert parameters and all(math.isfinite(value) for value in parameters.values()), (name, parameters)
        # Bootstrap intervals for every parameter, or none with the reason (too few usable resamples).
        assert set(law["intervals"]) == set(parameters) or (
            law["intervals"] == {} and law["bootstrap"]["no_interval_reason"]
        ), (name, law["intervals"], law["bootstrap"].get("no_interval_reason"))
        for parameter, interval in law["intervals"].items():
            assert len(interval) == 2, (name, parameter, interval)
            if all(math.isfinite(bound) for bound in interval):
                assert interval[0] <= interval[1], (name, parameter, interval)
        assert law["bootstrap"]["resamples"] == smoke_run.config["analysis"]["bootstrap_resamples"], name
    for name in ("batch_size", "learning_rate"):
        assert all(math.isfinite(bound) for interval in laws[name]["intervals"].values() for bound in interval), name
    assert set(document["setup"]["budgets_tokens"]) == set(map(float, smoke_run.config["grid"]["milestones_tokens"]))
    assert [size["size"] for size in document["setup"]["fitting_sizes"]] == smoke_run.config["grid"]["sizes"]
    provenance = document["provenance"]
    assert re.fullmatch(r"[0-9a-f]{40}", provenance["code_version"]["commit"]), provenance["code_version"]
    assert provenance["config"]["fit_config"]["bootstrap_resamples"] == smoke_run.config["analysis"]["bootstrap_resamples"]
    assert provenance["config"]["runs"] == str(smoke_run.results / "runs.csv")
    import torch

    assert provenance["packages"]["torch"] == torch.__version__.split("+")[0]


@pytest.mark.slow
def test_smoke_batch_axis_reads_the_grid_of_the_runs_table(smoke_run):
    """``all`` writes the batch-axis reading (analysis.batch_axis): one record per fitting size and budget, whose best
    cell per batch is the lowest loss among that batch's grid runs in the runs table."""
    import pandas as pd

    document = json.loads((smoke_run.results / "batch_axis.json").read_text())
    runs = pd.read_csv(smoke_run.results / "runs.csv")
    grid = runs[(runs["series"] == "grid") & (runs["status"] == "completed")]
    assert [size["size"] for size in document["sizes"]] == smoke_run.config["grid"]["sizes"]
    for size in document["sizes"]:
        rows = grid[grid["size"] == size["size"]]
        for point in size["points"]:
            at = rows[rows["tokens"] == point["tokens"]]
            for entry in point["batches"]:
                losses = at[at["batch_clips"] == entry["batch_clips"]].groupby("learning_rate")["validation_loss"].mean()
                assert entry["best_loss"] == pytest.approx(losses.min(), rel=1e-9), (size["size"], point["tokens"])
    assert re.fullmatch(r"[0-9a-f]{40}", document["provenance"]["code_version"]["commit"])


@pytest.mark.slow
def test_smoke_figures_are_listed_and_are_real_images(smoke_run):
    folder = smoke_run.results / "figures"
    index = json.loads((folder / "index.json").read_text())
    listed = set(index["figures"])
    on_disk = {str(path.relative_to(folder)) for path in folder.rglob("*") if path.suffix in (".png", ".pdf")}
    assert listed == on_disk and listed, (listed ^ on_disk)
    names = {Path(name).stem for name in listed}
    assert names == set(index["captions"]), "every figure needs a caption"
    assert {"loss_vs_tokens", "heatmaps", "loss_law", "compute_optimal", "exponents"} <= names
    for name in listed:
        data = (folder / name).read_bytes()
        assert len(data) > 5000, name
        assert data.startswith(b"\x89PNG\r\n\x1a\n" if name.endswith(".png") else b"%PDF-"), name
        if name.endswith(".png"):
            width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            assert width >= 300 and height >= 200, (name, width, height)
    assert "code_version" in index["provenance"]


@pytest.mark.slow
def test_smoke_tables_have_rows_in_every_format(smoke_run):
    folder = smoke_run.results / "tables"
    stems = {path.stem for path in folder.glob("*.csv")}
    assert {"coefficients", "heldout", "baselines", "comparison"} <= stems, stems
    for stem in stems:
        rows = read_rows(folder / f"{stem}.csv")
        assert rows, stem
        markdown = [line for line in (folder / f"{stem}.md").read_text().splitlines() if line.startswith("|")]
        assert len(markdown) == 2 + len(rows), stem  # header, rule, one line per CSV row
        latex = (folder / f"{stem}.tex").read_text()
        rows_in_latex = [line for line in latex.splitlines() if line.rstrip().endswith("\\\\")]
        assert "\\begin{tabular}" in latex and len(rows_in_latex) >= 1 + len(rows), stem
    coefficients = read_rows(folder / "coefficients.csv")
    assert {"loss_optimal", "batch_size", "learning_rate"} <= {row["law"] for row in coefficients}
    assert "code_version" in json.loads((folder / "provenance.json").read_text())["laws_provenance"]


@pytest.mark.slow
def test_smoke_summary_has_every_section(smoke_run):
    text = (smoke_run.results / "summary.md").read_text()
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    missing = [s for s in SUMMARY_SECTIONS if not any(h.lower().startswith(s.lower()) for h in headings)]
    assert not missing, (missing, headings)
    timings = text[text.find("## Stage timings"):]
    for stage in ("train/grid/*", "train/heldout/*", "fit_grid", "fit_laws", "prepare_data"):
        assert f"| {stage} |" in timings, stage
    assert f"| train/grid/* | {len(grid_job_ids(smoke_run.config))} |" in timings
    # only the jobs the facts come from: not samples or figures, which ran too (before or after the facts)
    config = smoke_run.config
    evaluated = ["largest"] + ["compute_optimal"] * bool(config["heldout"].get("compute_optimal_size"))
    expected = {"prepare_data", "train/grid/*", "train/heldout/*", "fit_grid", "fit_laws"}
    expected |= {name for name, used in (("generate_data", config["data"]["source"] is None),
                                         ("fit_latent_codec", bool(config["data"]["latent"])),
                                         ("train/compute_optimal/*", "compute_optimal" in evaluated)) if used}
    expected |= {f"{stage}/{model}" for stage in ("validation_protocol_spread", "caption_conditioning", "caption_match")
                 for model in evaluated}
    facts = json.loads((smoke_run.results / "facts.json").read_text())
    assert {row["stage"] for row in facts["stage_timings"]} == expected and not facts["notes"]
    assert (smoke_run.workdir / "benchmarks" / "samples.tsv").exists()
    # the grid jobs' seconds split into training steps and validation passes, from their job records
    jobs = [json.loads(path.read_text()) for path in (smoke_run.workdir / "jobs" / "grid").rglob("job.json")]
    assert len(jobs) == len(grid_job_ids(smoke_run.config))
    parts = {p["part"]: p for p in json.loads((smoke_run.results / "facts.json").read_text())["performance"]["parts"]}
    for part, seconds in (("training", "wall_time_s"), ("validation", "validation_wall_time_s")):
        assert parts[part]["seconds"] == pytest.approx(sum(job[seconds] for job in jobs)) and parts[part]["seconds"] > 0
        assert parts[part]["model_flops"] == pytest.approx(sum(job["model_flops"][part] for job in jobs))
        assert f"| {part} |" in timings
    performance = json.loads((smoke_run.results / "performance.json").read_text())
    assert performance["matmul_flops_per_s"] == statistics.median(job["matmul"]["flops_per_s"] for job in jobs)
    assert all(size in text for size in smoke_run.config["heldout"]["sizes"])
    assert "%%" not in text, "a doubled percent sign (printf-style escaping left in the text)"


@pytest.mark.slow
def test_smoke_samples_and_evaluations(smoke_run):
    samples = smoke_run.results / "samples"
    index = json.loads((samples / "index.json").read_text())
    assert len(index["captions"]) >= 2
    for entry in index["captions"]:
        video = (samples / entry["mp4"]).read_bytes()
        assert video[4:8] == b"ftyp" and len(video) > 1000, entry["mp4"]
        assert entry["caption"] and entry["caption_ids"][0] == 1  # BOS
    assert (samples / "contact_sheet.png").read_bytes().startswith(b"\x89PNG")
    assert (samples / "samples.gif").read_bytes()[:4] == b"GIF8"

    from pipeline.runs import EVALUATED_MODELS, evaluated_run

    proposal = smoke_run.workdir / "analysis" / "proposal.json"
    facts = json.loads((smoke_run.results / "facts.json").read_text())
    for model in EVALUATED_MODELS:  # the smoke config has a compute-optimal run, so both models are evaluated
        run = evaluated_run(proposal, model)
        folder = smoke_run.results / "evaluation" / model
        spread = json.loads((folder / "validation_protocol_spread.json").read_text())
        assert len(spread["per_seed"]) == smoke_run.config["evaluation"]["protocol_spread_seeds"]
        assert all(math.isfinite(v) and 0 < v < 2 for v in spread["per_seed"].values())
        assert spread["min"] <= spread["mean"] <= spread["max"] and len(set(spread["per_seed"].values())) > 1
        assert Path(spread["provenance"]["config"]["run"]).resolve() == smoke_run.run_dir(run.run_id).resolve()
        captions = json.loads((folder / "caption_conditioning.json").read_text())
        for condition in ("captions", "null"):
            assert math.isfinite(captions["conditions"][condition]["mean"]), condition
        assert "code_version" in captions["provenance"] and captions["run"]["run_id"] == run.run_id
        match = json.loads((folder / "caption_match.json").read_text())
        assert Path(match["provenance"]["config"]["run"]).resolve() == smoke_run.run_dir(run.run_id).resolve()
        block = facts["captions"] if model == "largest" else facts["captions"][model]
        assert block["run"]["run_id"] == run.run_id
        assert block["gain"]["relative"] == captions["differences"]["null_minus_captions"]["relative"]
        assert block["gain"]["multiple"] == pytest.approx(block["gain"]["relative"] / spread["relative_std"])
    assert evaluated_run(proposal, "compute_optimal").series == "compute_optimal"

    heldout = json.loads((smoke_run.results / "heldout.json").read_text())
    measured = {row["run_id"] for row in read_rows(smoke_run.results / "runs.csv")}
    seeds = len(heldout_seeds(smoke_run.config))
    for group in heldout["groups"]:
        for cell in group.get("cells", []):  # a cell's loss is the mean of its replicates (heldout.seeds_per_cell)
            assert len(cell["runs"]) == seeds and set(cell["runs"]) <= measured and math.isfinite(cell["loss"]), cell
    assert "code_version" in heldout["provenance"]
    findings = (smoke_run.results / "paper" / "FINDINGS.md").read_text()
    assert findings.startswith("# Findings on the paper's open questions"), findings[:200]
    assert str(smoke_run.results / "laws.json") in findings and "## 0. The published laws" in findings


@pytest.mark.slow
def test_smoke_training_jobs_started_costliest_first(smoke_run):
    """Snakemake started the grid's jobs in the order of their priority, the estimated cost (pipeline.runs.job_cost):
    the stage ends with its shortest jobs, not with one long job while the other core waits."""
    started = [job for job in smoke_run.finished.jobs() if job.rule == "train_grid"]
    assert {job.wildcards.removeprefix("grid_job=") for job in started} == grid_job_ids(smoke_run.config)
    priorities = [job.priority for job in started]  # in the order Snakemake started them
    assert all(priority > 0 for priority in priorities), priorities
    # on 2 cores at most 2 jobs start at once (their blocks print in either order); any job started later has a
    # priority no higher
    assert all(priorities[i] >= later for i in range(len(priorities)) for later in priorities[i + 2:]), priorities


@pytest.mark.slow
def test_smoke_is_complete_and_a_rerun_does_nothing(smoke_run):
    result = smoke_run.run("--dry-run", "--cores", "2", timeout_s=DRY_RUN_TIMEOUT_S)
    assert result.returncode == 0, result.tail()
    assert "Nothing to be done" in result.output, result.tail()


@pytest.mark.slow
def test_html_report_embeds_figures_tables_and_samples(smoke_run, tmp_path):
    report = tmp_path / "report.html"
    result = smoke_run.run("--report", str(report), timeout_s=300)
    assert result.returncode == 0, result.tail()
    html = report.read_text(errors="replace")
    figures = sorted((smoke_run.results / "figures").rglob("*.png"))
    print(f"report: {report.stat().st_size / 1e6:.1f} MB, figure PNGs {sum(p.stat().st_size for p in figures) / 1e6:.1f} MB")
    # Self-contained: every figure and the samples' contact sheet inline as data URLs, every table and
    # FINDINGS.md/summary.md inline as markdown.
    assert html.count("data:image/png") >= len(figures) + 1, html.count("data:image/png")
    markdown = len(list((smoke_run.results / "tables").glob("*.md"))) + 2
    assert html.count("data:text/markdown") >= markdown, html.count("data:text/markdown")
    for figure in figures:
        assert f'"filename": "{figure.relative_to(smoke_run.results / "figures")}"' in html, figure
    assert "Figures for our runs and for the paper&#x27;s published laws" in html or \
        "Figures for our runs and for the paper's published laws" in html  # workflow/report/figures.rst
    assert "Held-out validation" in html and "contact_sheet.png" in html
    assert not re.search(r"""(?:src|href)=["'](?:file:|/)""", html), "the report links local files"


@pytest.mark.slow
def test_changing_one_grid_value_reruns_only_what_it_touches(smoke_run, tmp_path):
    learning_rates = smoke_run.config["grid"]["learning_rates"]
    changed = smoke_run.with_overrides({"grid": {"learning_rates": [*learning_rates, 4.0e-2]}}, tmp_path / "one-more-lr.yaml")
    result = changed.run("--dry-run", "--cores", "2", timeout_s=DRY_RUN_TIMEOUT_S)
    assert result.returncode == 0, result.tail()

    new_runs = grid_run_ids(changed.config) - grid_run_ids(smoke_run.config)
    grid = smoke_run.config["grid"]
    assert len(new_runs) == len(grid["sizes"]) * len(grid["batch_clips"]) and all("_lr0.04_" in r for r in new_runs)
    # every (size, batch) ensemble gains a member, so every grid job runs again; its finished members are
    # not retrained (dit.train skips runs whose summary has the same config), which the kill test checks
    assert train_wildcards(result) == grid_job_ids(smoke_run.config)
    for job in result.jobs():
        if job.rule == "train_grid":
            assert job.reason.startswith("Params have changed"), job
    rules = {job.rule: job for job in result.jobs()}
    assert not {"prepare_data", "fit_config"} & set(rules), sorted(rules)
    assert {"collect_grid_runs", "fit_grid", "propose_heldout", "collect_runs", "fit_laws", "figures", "summary"} <= set(rules)
    assert "Input files updated by another job" in rules["collect_grid_runs"].reason


@pytest.mark.slow
def test_changing_a_sampling_setting_reruns_only_what_reads_it(smoke_run, tmp_path):
    # the captions drawn on the contact sheet are read by the samples rule alone
    captions = smoke_run.with_overrides({"samples": {"captions": ["a red ball"]}}, tmp_path / "captions.yaml")
    result = captions.run("--dry-run", "--cores", "2", timeout_s=DRY_RUN_TIMEOUT_S)
    assert result.returncode == 0, result.tail()
    rules = {job.rule: job for job in result.jobs()}
    assert set(rules) == {"samples", "all"}, sorted(rules)
    assert rules["samples"].reason.startswith("Params have changed since last execution"), rules["samples"]

    # the sampler's steps are read by the samples and by the caption-following check, whose result the facts
    # (and every report rendered from them) read; training and the law fits are untouched
    steps = smoke_run.with_overrides({"samples": {"steps": smoke_run.config["samples"]["steps"] // 2}}, tmp_path / "steps.yaml")
    result = steps.run("--dry-run", "--cores", "2", timeout_s=DRY_RUN_TIMEOUT_S)
    assert result.returncode == 0, result.tail()
    rules = {job.rule: job for job in result.jobs()}
    for rule in ("samples", "caption_match"):
        assert rules[rule].reason.startswith("Params have changed since last execution"), rules[rule]
    assert "facts" in rules and "Input files updated by another job" in rules["facts"].reason, rules.get("facts")
    untouched = {"prepare_data", "fit_config", "train_grid", "train_heldout", "collect_grid_runs", "fit_grid",
                 "collect_runs", "fit_laws", "evaluate_heldout", "validation_protocol_spread", "caption_conditioning",
                 "grid_performance"}
    assert not untouched & set(rules), sorted(rules)


# ------------------------------------------------------------------ slow: killed mid-training, resumed


def _statuses(runs_table: Path) -> dict[str, str]:
    """run_id -> status of a runs table."""
    with open(runs_table, newline="") as handle:
        return {row["run_id"]: row["status"] for row in csv.DictReader(handle)}


def _killed_run_config(make_pipeline, directory: Path, smoke_config: dict, sizes: int = 2):
    """The smoke config cut to its first ``sizes`` sizes at the conventional batch size, with every learning rate
    and the noise-floor seeds of those sizes and that batch: the same training jobs, with the same members, as
    in the smoke run, so the same numbers to the bit. (A run's numbers can differ in the last bits between
    ensembles of other sizes: vectorized elementwise kernels round their remainder elements differently.)"""
    grid, conventional = smoke_config["grid"], smoke_config["conventional"]
    kept = grid["sizes"][:sizes]
    noise = [cell for cell in smoke_config["noise"]["cells"]
             if cell["size"] in kept and cell["batch_clips"] == conventional["batch_clips"]]
    return make_pipeline(directory, "test", {
        "grid": {"sizes": kept, "batch_clips": [conventional["batch_clips"]]},
        "noise": {"cells": noise, "seeds": smoke_config["noise"]["seeds"] if noise else []},
    })


def _finished_training_jobs(output: str) -> set[str]:
    """Job ids of train_grid jobs that Snakemake reported finished."""
    by_jobid = {job.jobid: job.wildcards.removeprefix("grid_job=") for job in planned_jobs(output) if job.rule == "train_grid"}
    return {by_jobid[int(jobid)] for jobid in re.findall(r"Finished jobid: (\d+) \(Rule: train_grid\)", output) if int(jobid) in by_jobid}


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_killed_run_resumes_on_rerun_with_identical_numbers(smoke_run, make_pipeline, tmp_path):
    """SIGKILL to snakemake and its training processes once one training job (an ensemble of two runs) has
    finished and another is mid-training (checkpoint, no job record); the same command again trains only what
    was unfinished, the interrupted job resumes from its checkpoint, and the grid's runs table equals the
    uninterrupted smoke run's to the bit (where each run trained in a larger ensemble)."""
    pipeline = _killed_run_config(make_pipeline, tmp_path, smoke_run.config)
    copy_data(smoke_run, pipeline)
    target = pipeline.workdir / "analysis" / "grid_runs.csv"
    run_ids = grid_run_ids(pipeline.config)
    job_ids = grid_job_ids(pipeline.config)
    assert len(job_ids) == 2
    # --nolock: the SIGKILLed snakemake cannot remove its lock, and `snakemake --unlock` would also
    # remove the locks of other runs started in this repository.
    # one core: the two jobs run one after the other, so one can finish while the other is mid-training
    command = pipeline.command("--cores", "1", "--profile", str(LOCAL_PROFILE), "--nolock", str(target))
    output_path = tmp_path / "killed.out"
    deadline = time.monotonic() + KILL_RUN_TIMEOUT_S
    with open(output_path, "w") as output:
        process = subprocess.Popen(command, cwd=REPOSITORY_ROOT, env=workflow_environment(), stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)

    def job_dir(job_id: str) -> Path:
        return pipeline.workdir / "jobs" / job_id

    def state() -> tuple[set[str], list[str]]:
        """Jobs Snakemake reported finished; jobs with a checkpoint but no job record (mid-training)."""
        finished = _finished_training_jobs(output_path.read_text())
        interrupted = [
            job_id for job_id in sorted(job_ids - finished)
            if (job_dir(job_id) / "checkpoints" / "latest.pt").exists() and not (job_dir(job_id) / "job.json").exists()
        ]
        return finished, interrupted

    try:
        while True:
            assert process.poll() is None, f"the run ended before it could be killed:\n{output_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, output_path.read_text()[-4000:]
            if all(state()):
                # Freeze snakemake and its training processes, look again (nothing moves now), then kill.
                os.killpg(process.pid, signal.SIGSTOP)
                finished, interrupted = state()
                if finished and interrupted:
                    break
                os.killpg(process.pid, signal.SIGCONT)
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    killed_at = time.monotonic()
    while _processes_mentioning(str(pipeline.workdir)) and time.monotonic() < killed_at + 30:
        time.sleep(0.2)
    assert not _processes_mentioning(str(pipeline.workdir)), "snakemake's training children outlived the kill"
    assert process.returncode == -signal.SIGKILL
    assert state() == (finished, interrupted)
    finished_mtimes = {job_id: (job_dir(job_id) / "job.json").stat().st_mtime_ns for job_id in finished}

    rerun = run_bounded(command, timeout_s=KILL_RUN_TIMEOUT_S)
    assert rerun.returncode == 0, rerun.tail()
    retrained = train_wildcards(rerun)
    assert set(interrupted) <= retrained <= job_ids - finished, "only jobs unfinished at the kill may be trained again"
    for job_id, mtime in finished_mtimes.items():
        assert (job_dir(job_id) / "job.json").stat().st_mtime_ns == mtime, f"{job_id} was redone"
    for job_id in interrupted:
        log = (pipeline.workdir / "logs" / "train" / f"{job_id}.log").read_text()
        resumed = re.search(r"resumed from \S+latest\.pt at step (\d+)", log)
        assert resumed and int(resumed.group(1)) > 0, log[-3000:]
    reference_status = _statuses(smoke_run.results / "runs.csv")
    for job_id in interrupted:
        for member in json.loads((job_dir(job_id) / "job.json").read_text())["members"]:
            status = json.loads((Path(member["run_dir"]) / "summary.json").read_text())["status"]
            assert status == reference_status[member["run_id"]], (member["run_id"], status)  # the diverging cell too
    assert _statuses(target) == {run_id: reference_status[run_id] for run_id in run_ids}
    assert "diverged" in _statuses(target).values(), "the kept noise cells include the diverging one"

    losses = read_losses(target)
    reference = read_losses(smoke_run.results / "runs.csv")
    completed = {run_id for run_id in run_ids if reference_status[run_id] == "completed"}
    assert {run_id for run_id, _ in losses} >= completed
    assert sum(run_id in completed for run_id, _ in losses) == len(completed) * len(pipeline.config["grid"]["milestones_tokens"])
    for key, value in losses.items():
        assert value == reference[key], f"{key}: resumed {value} != uninterrupted {reference[key]}"
    print(f"killed after {len(finished)} finished run(s), {interrupted} resumed; rerun {rerun.seconds:.0f} s")


@pytest.mark.slow
def test_failed_training_job_stops_its_branch_names_its_log_and_the_rest_goes_on(smoke_run, make_pipeline, tmp_path):
    """One training job's folder holds an unreadable checkpoint: the job fails with a clear reason in its log
    and in its runs' summaries, Snakemake names that log, the other job still finishes (keep-going), nothing
    that depends on the failed job is built, and the bad file is left in place."""
    # two jobs (one per size): one broken, one that must still finish
    pipeline = _killed_run_config(make_pipeline, tmp_path, smoke_run.config, sizes=2)
    copy_data(smoke_run, pipeline)
    job_ids = sorted(grid_job_ids(pipeline.config))
    assert len(job_ids) == 2
    broken, other = job_ids
    checkpoint = pipeline.workdir / "jobs" / broken / "checkpoints" / "latest.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"not a checkpoint")
    target = pipeline.workdir / "analysis" / "grid_runs.csv"
    result = pipeline.run("--cores", "2", "--profile", str(LOCAL_PROFILE), str(target), timeout_s=KILL_RUN_TIMEOUT_S)
    assert result.returncode not in (0, 124, 137), result.tail()
    log = pipeline.workdir / "logs" / "train" / f"{broken}.log"
    assert f"checkpoint {checkpoint} cannot be read" in log.read_text(), log.read_text()[-3000:]
    assert str(log) in result.output and "cannot be read" in result.output, result.tail()
    size = {job_id: job_id.split("/")[1] for job_id in job_ids}
    for run_id in grid_run_ids(pipeline.config):
        summary = json.loads((pipeline.run_dir(run_id) / "summary.json").read_text())
        if run_id.split("/")[1] == size[broken]:
            assert summary["status"] == "failed" and str(checkpoint) in summary["status_reason"], run_id
        else:
            assert summary["status"] == "completed", run_id
    assert not target.exists() and not (pipeline.workdir / "jobs" / broken / "job.json").exists()
    assert (pipeline.workdir / "jobs" / other / "job.json").exists()
    assert checkpoint.read_bytes() == b"not a checkpoint"
