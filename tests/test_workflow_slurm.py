"""The Snakemake pipeline through ``--executor slurm`` on the local one-node SLURM cluster.

Each test runs Snakemake with workflow/profiles/slurm as ``slurm_cluster.write_profile`` adapts it
(partition, no accounting, requests capped at the node), plus three test settings: every job asks
for one CPU (training and evaluation run on one thread, so two jobs run at once on the two-CPU node),
four jobs may be submitted at once (SLURM queues the others), and SLURM logs go to the test's
temporary folder. Numbers are compared with the local smoke run (``smoke_run``): the same
seeds give the same losses whichever executor ran the job, and whether or not it was preempted.

Each SLURM job costs 12-33 s here (job start, Snakemake's start inside the job, and the executor's
status checks, 10 s further apart each round in which no job finished), so the tests start as few
jobs as show each behaviour: the smoke workflow resumes from the local run's finished workflow with one
held-out training job to redo (not the one the evaluations and samples read, so the SLURM jobs are that
training job and the final fit, one after the other), and one Snakemake run both preempts a training
job and fails another, started in the background so that its waits overlap the smoke workflow's.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPOSITORY_ROOT, SLURM_PROFILE, BackgroundCommand, SnakemakeRun, copy_data, read_losses, workflow_environment
from slurm_cluster import wait_for_path

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SLURM_SMOKE_TIMEOUT_S = 900
SLURM_ONE_RUN_TIMEOUT_S = 420
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")
# Rules that must run as SLURM jobs (the expensive ones); workflow/rules/*.smk marks the cheap
# aggregates (tables, summary, figures, ...) ``localrule: True``.
CLUSTER_RULES = {"prepare_data", "train_grid", "train_heldout", "fit_grid", "fit_laws", "samples",
                 "validation_protocol_spread", "caption_conditioning", "caption_match"}
# Metrics that must match exactly between an interrupted run and an uninterrupted one (not the clocks).
EXACT_METRICS = ("milestone_tokens", "step", "tokens", "clips", "flops", "flops_6n", "train_loss", "validation_loss", "lr")


def conventional_job(config: dict, largest: bool) -> str:
    """The training job (an ensemble) of the conventional batch size at the smallest or largest grid size."""
    size = config["grid"]["sizes"][-1 if largest else 0]
    return f"grid/{size}/b{config['conventional']['batch_clips']}"


def job_members(job_dir: Path) -> list[Path]:
    """The run folders of a job, from the ensemble file dit.launch wrote into its folder."""
    return [Path(member["out"]) for member in yaml.safe_load((job_dir / "ensemble.yaml").read_text())["members"]]


def slurm_profile(cluster, directory: Path, *, retries: int | None = None) -> Path:
    """workflow/profiles/slurm adapted to the local cluster, one CPU per job, logs in ``directory``."""
    profile = cluster.write_profile(SLURM_PROFILE, directory / "profile")
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    settings["default-resources"]["cpus_per_task"] = 1
    for rule in ("train_grid", "train_heldout"):
        settings["set-resources"][rule]["cpus_per_task"] = 1
    # More jobs submitted than the node runs at once: SLURM queues them, so a job starts as soon as a CPU
    # is free instead of after Snakemake's next status check, and local rules do not take a job's slot.
    settings["jobs"] = 4
    settings["slurm-logdir"] = str(directory / "slurm-logs")
    settings["slurm-keep-successful-logs"] = True
    if retries is not None:
        settings["retries"] = retries
    (profile / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return profile


def copy_finished_stages(source, destination) -> None:
    """The local run's data, every run and job folder, the fits, the held-out proposal, the stage benchmarks and
    the results, with their times, so Snakemake finds every stage done."""
    copy_data(source, destination)
    for folder in ("runs", "jobs", "analysis", "benchmarks"):
        shutil.copytree(source.workdir / folder, destination.workdir / folder)
    shutil.copytree(source.results, destination.results)


def result_files(results: Path) -> set[str]:
    return {str(path.relative_to(results)) for path in results.rglob("*") if path.is_file() and path.name != ".snakemake_timestamp"}


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return [{key: row[key] for key in EXACT_METRICS} for row in csv.DictReader(handle)]


@pytest.mark.timeout(SLURM_SMOKE_TIMEOUT_S + 900)
def test_smoke_workflow_through_slurm_matches_the_local_run(slurm_cluster, smoke_run, make_pipeline, tmp_path,
                                                            preempted_and_failing):
    """The tests' smoke workflow through SLURM from the local run's finished workflow with one held-out training
    job removed: that job is trained again as a SLURM job, then the final fit runs as a SLURM job and what
    reads it (held-out check, tables, figures, facts, summary) locally. The job is not the one that trains the
    run the laws predict best, which the evaluations and samples read, so those stay done: each SLURM job
    costs tens of seconds here, and they are shell rules with the default resources, as the fit is. Every
    number and every result file must be the local run's. (The preempt-and-fail run goes on meanwhile, on
    the same node.)"""
    from pipeline.runs import find_job, job_of, predicted_heldout_run, proposed_runs, training_jobs

    pipeline = make_pipeline(tmp_path, "test")
    copy_finished_stages(smoke_run, pipeline)
    proposal = pipeline.workdir / "analysis" / "proposal.json"
    jobs = training_jobs(proposed_runs(proposal))
    read_by_evaluations = job_of(jobs, predicted_heldout_run(proposal).run_id).job_id
    retrained_job = next(job.job_id for job in jobs if job.job_id.startswith("heldout/") and job.job_id != read_by_evaluations)
    retrained = find_job(jobs, retrained_job).runs[0].run_id
    for run_dir in job_members(pipeline.workdir / "jobs" / retrained_job):
        shutil.rmtree(pipeline.run_dir(str(run_dir.relative_to(smoke_run.workdir / "runs"))))
    shutil.rmtree(pipeline.workdir / "jobs" / retrained_job)
    (pipeline.results / "runs.csv").unlink()  # what reads the job: without it, Snakemake leaves the job's record missing
    profile = slurm_profile(slurm_cluster, tmp_path)
    result = pipeline.run("--profile", str(profile), timeout_s=SLURM_SMOKE_TIMEOUT_S, env=slurm_cluster.env())
    (tmp_path / "snakemake.out").write_text(result.output)
    print(f"\nsmoke workflow through --executor slurm from the local grid and held-out stage: {result.seconds:.0f} s "
          f"(whole smoke workflow, local profile, 2 cores: {smoke_run.finished.seconds:.0f} s)")
    assert result.returncode == 0, result.tail()

    jobs = {job.jobid: job for job in result.jobs()}
    submitted = [(jobs[int(jobid)], slurm_job) for jobid, slurm_job, _ in SUBMITTED.findall(result.output)]
    assert sorted(job.jobid for job, _ in submitted) == sorted(job.jobid for job in jobs.values() if not job.local), \
        "every job not marked local must be submitted to SLURM exactly once"
    assert not CLUSTER_RULES & {job.rule for job in jobs.values() if job.local}
    assert sorted(job.rule for job, _ in submitted) == ["fit_laws", "train_heldout"]
    assert [job.wildcards.removeprefix("heldout_job=") for job, _ in submitted if job.rule == "train_heldout"] == [retrained_job]
    for job, slurm_job in submitted:
        assert slurm_cluster.job_state(slurm_job) == "COMPLETED", (job, slurm_job)

    assert result_files(pipeline.results) == result_files(smoke_run.results)
    assert read_losses(pipeline.results / "runs.csv") == read_losses(smoke_run.results / "runs.csv"), \
        "SLURM and local runs of the same seeds differ"
    assert read_metrics(pipeline.run_dir(retrained) / "metrics.csv") == read_metrics(smoke_run.run_dir(retrained) / "metrics.csv")
    laws = json.loads((pipeline.results / "laws.json").read_text())["laws"]
    local_laws = json.loads((smoke_run.results / "laws.json").read_text())["laws"]
    for name in ("loss_optimal", "batch_size", "learning_rate"):
        assert laws[name]["parameters"] == pytest.approx(local_laws[name]["parameters"], rel=1e-9), name
    for name, key in (("heldout.json", "groups"), ("facts.json", "claims")):  # rewritten locally from the SLURM jobs' results
        assert (pipeline.results / name).stat().st_mtime > (smoke_run.results / name).stat().st_mtime, name
        assert json.loads((pipeline.results / name).read_text())[key] == json.loads((smoke_run.results / name).read_text())[key], name


@dataclass
class PreemptionScenario:
    """What tests/test_workflow_slurm.py's preempt-and-fail Snakemake run left behind (see ``preempted_and_failing``)."""

    pipeline: object
    preempted: str  # job ids
    failing: str
    checkpoint: Path
    milestones: list[int]
    result: SnakemakeRun | None = None
    signalled_job: str | None = None
    signalled_at: float | None = None
    reference: subprocess.Popen | None = None
    reference_dir: Path | None = None
    error: BaseException | None = None


def run_preemption_scenario(scenario: PreemptionScenario, cluster, tmp_path: Path) -> None:
    """Snakemake with retries=1 and two training jobs side by side: ``scancel --signal=TERM`` to one after its
    first checkpoint (and the same ensemble trained locally meanwhile, uninterrupted); the other's job folder
    holds an unreadable checkpoint."""
    pipeline = scenario.pipeline
    job_dir = pipeline.workdir / "jobs" / scenario.preempted
    profile = slurm_profile(cluster, tmp_path, retries=1)
    command = pipeline.command("--profile", str(profile), str(job_dir / "job.json"),
                               str(pipeline.workdir / "jobs" / scenario.failing / "job.json"))
    run = BackgroundCommand(command, timeout_s=SLURM_ONE_RUN_TIMEOUT_S, output=tmp_path / "snakemake.out", env=cluster.env())
    try:
        job = cluster.wait_for_rule_job("train_grid", "RUNNING", wildcards=scenario.preempted, timeout_s=240)
        wait_for_path(job_dir / "checkpoints" / "latest.pt", timeout_s=180, poll_s=0.05)
        cluster.send_signal(job, "TERM")
        scenario.signalled_job, scenario.signalled_at = job, time.monotonic() - run.started
        # The uninterrupted reference: the ensemble the rule launched (dit.launch wrote it), its run folders
        # moved under a folder of its own, trained locally while SLURM requeues the preempted job.
        scenario.reference_dir = tmp_path / "uninterrupted"
        members = yaml.safe_load((job_dir / "ensemble.yaml").read_text())["members"]
        for member in members:
            member["out"] = str(scenario.reference_dir / Path(member["out"]).relative_to(pipeline.workdir / "runs"))
        reference_config = tmp_path / "uninterrupted.yaml"
        reference_config.write_text(yaml.safe_dump({"members": members}))
        with open(tmp_path / "uninterrupted.log", "w") as reference_log:
            scenario.reference = subprocess.Popen(
                [sys.executable, "-m", "dit.train", "--ensemble", str(reference_config),
                 "--out", str(scenario.reference_dir / "job")],
                cwd=REPOSITORY_ROOT, env=workflow_environment(), stdout=reference_log, stderr=subprocess.STDOUT,
            )
    except BaseException as error:  # reported by the test that reads the scenario
        scenario.error = error
    finally:
        scenario.result = run.wait()


@pytest.fixture(scope="module")
def preempted_and_failing(slurm_cluster, smoke_run, make_pipeline, tmp_path_factory):
    """The preempt-and-fail Snakemake run, started in a thread of its own when the first test of this module
    asks for it: its jobs and SLURM's status checks (mostly waiting) overlap the smoke workflow's."""
    tmp_path = tmp_path_factory.mktemp("preempted-and-failing")
    # Four times the budget leaves time to signal the job after its first checkpoint.
    milestones = list(smoke_run.config["grid"]["milestones_tokens"])
    pipeline = make_pipeline(tmp_path, "test", {"grid": {"milestones_tokens": [*milestones, 2 * milestones[-1], 4 * milestones[-1]]}})
    failing = conventional_job(pipeline.config, largest=False)
    scenario = PreemptionScenario(pipeline, conventional_job(pipeline.config, largest=True), failing,
                                  pipeline.workdir / "jobs" / failing / "checkpoints" / "latest.pt", milestones)
    copy_data(smoke_run, pipeline)
    scenario.checkpoint.parent.mkdir(parents=True)
    scenario.checkpoint.write_bytes(b"not a checkpoint")
    thread = threading.Thread(target=run_preemption_scenario, args=(scenario, slurm_cluster, tmp_path), daemon=True)
    thread.start()
    yield scenario, thread, tmp_path
    thread.join(timeout=SLURM_ONE_RUN_TIMEOUT_S + 120)
    if scenario.reference is not None and scenario.reference.poll() is None:
        scenario.reference.kill()


def test_a_preempted_job_resumes_and_a_failing_job_stops_after_its_retries(slurm_cluster, preempted_and_failing):
    """One Snakemake run with retries=1 and two training jobs side by side on the node.

    Preempted: ``scancel --signal=TERM`` mid-run; the trainer checkpoints and exits 75, the retry resubmits
    the job, it resumes from the checkpoint and ends with the metrics of an uninterrupted run of the same
    ensemble, trained locally meanwhile. Failing: its job folder holds an unreadable checkpoint, a real error
    at start (not a preemption): it is submitted twice, then Snakemake names its SLURM logs and its
    training log and exits non-zero (keep-going lets the preempted job finish). Both jobs are ensembles: every
    member of the preempted job ends with the uninterrupted ensemble's metrics; every member of the failing
    job is recorded as failed."""
    scenario, thread, tmp_path = preempted_and_failing
    thread.join(timeout=SLURM_ONE_RUN_TIMEOUT_S + 120)
    assert not thread.is_alive(), "the preempt-and-fail Snakemake run did not end"
    if scenario.error is not None:
        raise scenario.error
    result, job, pipeline = scenario.result, scenario.signalled_job, scenario.pipeline
    preempted, failing, checkpoint, milestones = scenario.preempted, scenario.failing, scenario.checkpoint, scenario.milestones
    job_dir = pipeline.workdir / "jobs" / preempted
    print(f"\npreempted at {scenario.signalled_at:.0f} s, finished after {result.seconds:.0f} s")
    assert result.returncode not in (0, 124, 137), result.tail()

    # Which training job each SLURM job ran, as SLURM recorded it (the executor's job comment). (Snakemake's own
    # job blocks cannot say: show-failed-logs prints each failed job's log, which holds the job step's
    # blocks, numbered from 0 again.)
    comments = {job["job_id"]: job["comment"] for job in slurm_cluster.jobs()}
    runs = {f"rule_train_grid_wildcards_{job_id.replace('/', '_')}": job_id for job_id in (preempted, failing)}
    by_run: dict[str, list[tuple[str, Path]]] = {}
    for _, slurm_job, log in SUBMITTED.findall(result.output):
        by_run.setdefault(runs.get(comments.get(slurm_job), comments.get(slurm_job)), []).append((slurm_job, Path(log)))
    assert sorted(by_run) == sorted([preempted, failing]), by_run
    assert result.output.count("Trying to restart job") == 2, result.tail()

    # preempted, resubmitted, resumed
    (first, first_log), (second, _) = by_run[preempted]
    assert first == job
    assert slurm_cluster.job_state(first) == "FAILED" and slurm_cluster.job_state(second) == "COMPLETED"
    # The first attempt's training log, which show-failed-logs printed before the retry overwrote it.
    assert f"dit.train: preempted; checkpoint written to {job_dir / 'checkpoints'}" in result.output, result.tail()
    assert first_log.exists() and first_log.is_relative_to(tmp_path / "slurm-logs")
    log = (pipeline.workdir / "logs" / "train" / f"{preempted}.log").read_text()
    resumed = re.search(r"resumed from \S+latest\.pt at step (\d+)", log)
    assert resumed and int(resumed.group(1)) >= 10, log[-3000:]
    assert scenario.reference.wait(timeout=600) == 0, (tmp_path / "uninterrupted.log").read_text()[-3000:]
    members = job_members(job_dir)
    assert len(members) >= 2
    for run_dir in members:
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["tokens"] >= 4 * milestones[-1] > summary["tokens"] - summary["batch_tokens"]
        reference = scenario.reference_dir / run_dir.relative_to(pipeline.workdir / "runs")
        assert read_metrics(run_dir / "metrics.csv") == read_metrics(reference / "metrics.csv"), run_dir

    # failing: two attempts, both FAILED, each SLURM log and the training log named
    train_log = pipeline.workdir / "logs" / "train" / f"{failing}.log"
    assert len(by_run[failing]) == 2
    for slurm_job, slurm_log in by_run[failing]:
        assert slurm_cluster.job_state(slurm_job) == "FAILED", slurm_job
        assert slurm_log.is_relative_to(tmp_path / "slurm-logs") and slurm_log.exists(), slurm_log
        # The error report names the SLURM job, its log and the rule's own log.
        assert f"SLURM-job '{slurm_job}' failed, SLURM status is: 'FAILED'" in result.output, result.tail()
        assert f"log: {train_log}, {slurm_log} (check log file(s) for error details)" in result.output, result.tail()
        assert "exit code 1" in slurm_log.read_text(), slurm_log.read_text()[-3000:]
    reason = f"checkpoint {checkpoint} cannot be read"
    assert reason in train_log.read_text() and "dit.train: run failed" in train_log.read_text()
    assert reason in result.output, "show-failed-logs must print the training log's error"
    from pipeline.runs import find_job, grid_runs, training_jobs

    for run in find_job(training_jobs(grid_runs(pipeline.config)), failing).runs:
        assert not (pipeline.run_dir(run.run_id) / "metrics.csv").exists(), run.run_id
        assert json.loads((pipeline.run_dir(run.run_id) / "summary.json").read_text())["status"] == "failed", run.run_id
    assert not (pipeline.workdir / "jobs" / failing / "job.json").exists()
    assert checkpoint.read_bytes() == b"not a checkpoint"
