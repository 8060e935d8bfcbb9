"""What a training job leaves in its folder: the resumable state of its runs, and its record when done.

A job trains one run, or several as an ensemble (``dit.engine``). Its folder holds::

    checkpoints/latest.pt   the whole job's resumable state (written atomically; format ``CHECKPOINT_FORMAT``);
                            the last one, written before the runs' summaries, also holds the job's record
                            (``job_record``) bar its matmul rate
    job.json                written when every run of the job has finished: its runs and their statuses,
                            steps, seconds of training steps and of validation passes, the model FLOPs
                            it computed, and the CPU's float32 matmul rate measured at its end (a job
                            killed after its runs' summaries and before job.json gets it on its rerun,
                            from that last checkpoint, with the rate measured then)
    ensemble.yaml           the members, when ``python -m dit.launch --ensemble-json`` started it

A run trained alone with ``python -m dit.train --config FILE --out RUN_DIR`` uses its run folder as its
job folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dit.atomic import atomic_write_json

CHECKPOINT_NAME = "latest.pt"
CHECKPOINT_FORMAT = 2
JOB_FILE = "job.json"


class CheckpointError(RuntimeError):
    """The job folder's checkpoint exists but cannot be used; the message names the file."""


def read_checkpoint(path: Path) -> dict:
    """A job checkpoint, checked to be one of this engine's; ``CheckpointError`` naming the file otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or foreign file: say which, keep it for inspection
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(error).__name__}: {first_line}); "
                              "it is left in place: move it away to restart this run from its start") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of dit.train (no 'step'); it is left in place")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a checkpoint of format {state.get('format', 1)}, this dit.train writes "
                              f"format {CHECKPOINT_FORMAT}; it is left in place: move it away to restart the run")
    return state


def remove_checkpoint_temporaries(job_dir: Path) -> list[Path]:
    """Remove the temporary files that checkpoint writes killed before their rename left beside this job folder's
    ``checkpoints/latest.pt`` (``.latest.pt.*.tmp``, ``dit.atomic.atomic_path``'s), and only those; returns them.

    Only the job's own writer may call it, before it writes a checkpoint (``dit.engine``: the main process at
    the job's start), so no write in progress is removed."""
    removed = []
    for path in sorted((Path(job_dir) / "checkpoints").glob(f".{CHECKPOINT_NAME}.*.tmp")):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_job_record(job_dir: Path, members: list[dict], steps: int, wall_time_s: float, model_flops: dict,
                     model_config: dict | None = None, note: str | None = None, validation_wall_time_s: float = 0.0,
                     matmul: dict | None = None, recorded_after_restart: bool = False) -> None:
    """Write ``job.json`` atomically: the runs (``run_id``, ``run_dir``, ``status``), the steps taken, the
    seconds of training steps (``wall_time_s``) and of validation passes (``validation_wall_time_s``), the
    model FLOPs computed (``training``, ``validation``, ``total``) and the matmul rate measured at the job's
    end (``matmul``: ``dit.matmul_rate.measure_matmul``'s record). ``recorded_after_restart``: the record was
    written by a later process from the job's final checkpoint (its training had finished before), so the
    wall time of the process that wrote it is not the training's."""
    record = {"members": members, "steps": steps, "wall_time_s": wall_time_s,
              "validation_wall_time_s": validation_wall_time_s, "model_flops": model_flops, "model_config": model_config,
              "matmul": matmul, "recorded_after_restart": recorded_after_restart}
    if note:
        record["note"] = note
    atomic_write_json(Path(job_dir) / JOB_FILE, record)

