"""Training: ``python -m dit.train --config FILE --out DIR`` (one run) or ``--ensemble FILE --out JOB_DIR``.

One run trains one model size at one (global batch, learning rate): AdamW, linear warmup, then a
**constant** learning rate, and at each token milestone of ``schedule.milestones_tokens`` it measures
the validation loss (``dit.diffusion.validation_loss``) and appends a row to its ``metrics.csv``.
Several runs that differ only in learning rate and seed train together as one ensemble
(``dit.engine``); each keeps its own run folder (``dit.run_folder``). The ensemble file lists them::

    members:
      - {out: work/runs/grid/tiny-18k/b4_lr0.001_s0, config: {...dit.config keys...}}
      - {out: work/runs/grid/tiny-18k/b4_lr0.002_s0, config: {...}}

Exactness: the timesteps, noise and caption-dropout draws of step ``s`` come from a generator seeded
by ``(seed, s)`` for the whole global batch, and each process takes its slice, so 1 and P processes
(and any micro-batch split) compute the same update up to floating-point summation order. A run
restarted with the same command resumes from the job folder's checkpoint and, on CPU, ends with
metrics identical to an uninterrupted run. A run whose folder already holds a finished summary of
the same config is not trained again. A job killed after its runs' summaries and before its
``job.json`` writes that record on its rerun from its final checkpoint (``train_ensemble``).
Settings this machine cannot honour (``device: cuda`` without a GPU, ``xformers`` on a CPU), a
data folder without training or validation clips, and an ``--out`` (or ensemble member ``out``) that is
a file or lies below one are configuration errors, found before anything is written or trained.

Exit codes: 0 every run completed or diverged (``summary.json`` says which), 1 failed, 2 bad
configuration, 75 preempted (SIGTERM or SIGUSR1: a checkpoint was written; rerun to resume).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

import torch

from dit import matmul_rate
from dit.atomic import OutputPathError, atomic_write_json, check_output_folder
from dit.config import ConfigError, TrainConfig, check_ensemble, load_config, load_ensemble, resumable_config_hash
from dit.distributed import environment_rank
from dit.engine import EnsembleTrainer, Member, check_runtime, write_finished_job_record
from dit.job_folder import CHECKPOINT_NAME, JOB_FILE, CheckpointError, read_checkpoint, write_job_record
from dit.provenance import provenance
from dit.run_folder import is_finished

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_CONFIG_ERROR = 2
EXIT_PREEMPTED = 75


def train_ensemble(members: list[tuple[TrainConfig, Path]], job_dir: Path) -> list[str]:
    """Train (or resume) several runs as one ensemble with its state in ``job_dir``; returns their statuses.

    Runs already finished with the same config are not trained again; when all are, nothing runs, and
    the job's ``job.json``, if missing, is written by ``record_finished_job``. The device and attention
    backend are checked (``ConfigError``) before any file is written or removed.
    """
    check_ensemble([config for config, _ in members])
    job_dir = Path(job_dir)
    configured = [Member(config, Path(out), resumable_config_hash(config)) for config, out in members]
    finished = [is_finished(member.out_dir, member.resumable_hash) for member in configured]
    resumed = None
    if all(finished):
        for member, status in zip(configured, finished):
            print(f"{member.out_dir}: already {status}; nothing to do", file=sys.stderr)
        if (job_dir / JOB_FILE).exists():
            return list(finished)
        resumed = record_finished_job(configured, finished, job_dir)  # the job's record, so that its rerun completes
        if resumed is None:
            return list(finished)
    check_runtime(configured[0].config)
    if resumed is not None:
        planned = resumed
    else:
        try:
            planned = plan_members(configured, finished, job_dir)
        except CheckpointError as error:
            for member, status in zip(configured, finished):
                if not status:
                    _record_failure(member, str(error))
            raise
    try:
        trainer = EnsembleTrainer(planned, job_dir)
    except ConfigError:
        raise
    except Exception as error:
        for member in planned:
            _record_failure(member, f"{type(error).__name__} while setting up the run: {error}")
        raise
    try:
        statuses = dict(zip((m.out_dir for m in planned), trainer.run()))
    except Exception as error:  # recorded in every unfinished run, then re-raised for a non-zero exit
        for member in planned:
            if member.active:
                trainer.write_summary(member, "failed", f"{type(error).__name__}: {error}")
        raise
    finally:
        trainer.context.close()
    return [statuses.get(Path(out)) or is_finished(out, resumable_config_hash(config)) for config, out in members]


def record_finished_job(configured: list[Member], finished: list[str], job_dir: Path) -> list[Member] | None:
    """Write ``job.json`` of a job whose runs have all finished, or return the members to resume to write it.

    When the job folder's checkpoint trained some of these runs (its members are all configured, with
    these config hashes), the job was killed after their summaries and before its record (or its
    record was removed since): the final checkpoint holds the record's training facts (steps, seconds
    of training steps and validation passes, model FLOPs), written before any summary, and the matmul
    rate is measured now, at the job's threads. A checkpoint of these runs without them (written
    before the last of them diverged, or by older code) is returned to be resumed: the job then ends
    as it did, and writes its record. Otherwise this job trained nothing, and its record says so.
    Of the processes of a ``torchrun`` job, only the main one (``RANK`` 0) writes the record.
    """
    path = job_dir / "checkpoints" / CHECKPOINT_NAME
    note = "every run had finished already; this job trained nothing"
    try:
        state = _read_if_present(path)
    except CheckpointError as error:  # the runs are done: their job's record must not fail on it
        state, note = None, f"every run had finished already; this job's training is not recorded: {error}"
    by_key = {(str(m.out_dir), m.resumable_hash): (m, status) for m, status in zip(configured, finished)}
    layout = [tuple(entry) for entry in state.get("layout", [])] if state else []
    if layout and all(key in by_key for key in layout):
        record = state.get("job_record")
        if record is None:
            print(f"{path}: written at step {state['step']}, before its runs ended; resuming it to end the job "
                  "as it did and write its record", file=sys.stderr)
            return [by_key[key][0] for key in layout]
        if environment_rank() == 0:
            members = [{"run_id": m.run_id, "run_dir": str(m.out_dir), "status": status}
                       for m, status in (by_key[key] for key in layout)]
            threads = configured[0].config.threads or torch.get_num_threads()
            write_finished_job_record(job_dir, members, record, matmul_rate.measure_matmul(threads),
                                      recorded_after_restart=True)
            print(f"{job_dir / JOB_FILE}: written from {path}, the job's final checkpoint", file=sys.stderr)
        return None
    if environment_rank() == 0:
        members = [{"run_id": m.run_id, "run_dir": str(m.out_dir), "status": s} for m, s in zip(configured, finished)]
        write_job_record(job_dir, members, 0, 0.0, {"training": 0.0, "validation": 0.0, "total": 0.0}, note=note)
    return None


def plan_members(configured: list[Member], finished: list[str | None], job_dir: Path,
                 is_main: bool | None = None) -> list[Member]:
    """The members this job trains: the unfinished ones, or those of the job's checkpoint when resuming.

    A checkpoint names its members (run folder and config hash). One whose members have all finished
    is spent (their run folders hold everything it trained): it is removed and the job starts afresh
    with its unfinished runs, whatever their configs (a run it trained that is now configured otherwise
    is trained again under the new config, as it would be without the checkpoint), as when a pipeline's
    proposal gives a job folder new runs. Otherwise it resumes only when its members are all configured
    and every other configured run has finished; else it belongs to another ensemble layout, and
    ``ConfigError`` says so.

    Every process of a ``torchrun`` job plans, before their process group exists: only the main one
    (``is_main``; by default ``RANK`` 0) removes a spent checkpoint, and one already removed is no error.
    """
    path = job_dir / "checkpoints" / CHECKPOINT_NAME
    state = _read_if_present(path)
    fresh = [member for member, status in zip(configured, finished) if not status]
    if state is None:  # a fresh job trains only what is unfinished
        return fresh
    layout = [tuple(entry) for entry in state.get("layout", [])]
    if layout and all(is_finished(out, resumable_hash) for out, resumable_hash in layout):
        if is_main if is_main is not None else environment_rank() == 0:
            print(f"{path}: its runs {[Path(out).name for out, _ in layout]} have all finished; removed, "
                  "starting afresh", file=sys.stderr)
            path.unlink(missing_ok=True)
        return fresh
    by_key = {(str(member.out_dir), member.resumable_hash): member for member in configured}
    outside = [m for m, status in zip(configured, finished) if not status and (str(m.out_dir), m.resumable_hash) not in layout]
    if not layout or any(key not in by_key for key in layout) or outside:
        raise ConfigError(
            f"{path} belongs to another ensemble layout (it trains {[Path(out).name for out, _ in layout]}; this job "
            f"configures {[m.out_dir.name for m in configured]} with other configs or more unfinished runs); "
            "use a new job folder, or delete the checkpoint to start over"
        )
    return [by_key[key] for key in layout]


def _read_if_present(path: Path) -> dict | None:
    """The job checkpoint at ``path``, or None when there is none (also when another process removed it meanwhile)."""
    if not path.exists():
        return None
    try:
        return read_checkpoint(path)
    except CheckpointError:
        if not path.exists():
            return None
        raise


def train(config: TrainConfig, out_dir: Path) -> str:
    """Train (or resume) one run in ``out_dir`` (its folder is also its job folder); returns its status."""
    return train_ensemble([(config, Path(out_dir))], Path(out_dir))[0]


def _record_failure(member: Member, reason: str) -> None:
    atomic_write_json(member.out_dir / "summary.json", {
        "status": "failed",
        "status_reason": reason,
        "run_id": member.run_id,
        "series": member.config.run.series,
        "provenance": {**provenance(member.config.to_dict()), "resumable_config_hash": member.resumable_hash},
    })


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dit.train",
        description="Train one video DiT run (one size, batch size in clips and learning rate), or several that "
        "differ only in learning rate and seed as one ensemble, and record the validation loss at each token "
        "milestone. Restarting with the same arguments resumes.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="YAML training config of one run (see dit/config.py)")
    source.add_argument("--ensemble", type=Path, help="YAML list of members: {out: RUN_FOLDER, config: {...}}")
    parser.add_argument("--out", required=True, type=Path,
                        help="with --config: the run folder; with --ensemble: the job folder (checkpoints/)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines (the metrics files are the record)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_output_folder(args.out)
        members = [(load_config(args.config), args.out)] if args.config else load_ensemble(args.ensemble)
        for position, (_, out) in enumerate(members if args.ensemble else []):
            check_output_folder(out, f"members[{position}].out")
        for config, _ in members:
            config.progress.quiet = config.progress.quiet or args.quiet
        statuses = train_ensemble(members, args.out)
    except ConfigError as error:
        print(f"dit.train: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except OutputPathError as error:
        print(f"dit.train: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except CheckpointError as error:
        print(f"dit.train: {error}", file=sys.stderr)
        print(f"dit.train: run failed; see the summary.json of each run of {args.out}", file=sys.stderr)
        return EXIT_FAILED
    except Exception:
        traceback.print_exc()
        print(f"dit.train: run failed; see the summary.json of each run of {args.out}", file=sys.stderr)
        return EXIT_FAILED
    if "preempted" in statuses:
        print(f"dit.train: preempted; checkpoint written to {args.out / 'checkpoints'}; rerun to resume", file=sys.stderr)
        return EXIT_PREEMPTED
    return EXIT_COMPLETED


if __name__ == "__main__":
    sys.exit(main())
