"""What one training run leaves in its folder, and how to read it back.

A run folder holds::

    config.yaml          the run's training config (dit.config keys)
    metrics.csv          one row per token milestone reached (``METRIC_COLUMNS`` plus per-timestep losses)
    summary.json         status (completed | diverged | preempted | failed), reason, sizes, FLOPs, provenance
    checkpoints/model.pt the run's model as a ``VideoDiT`` state dict (written when the run ends)

Every file is written atomically. A run trained alone also keeps its resumable training state in
``checkpoints/latest.pt``; a run trained as a member of an ensemble keeps it in the ensemble's job
folder (``dit.engine``), which its summary names.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dit.atomic import atomic_path, atomic_write_json, atomic_write_text
from dit.provenance import provenance

if TYPE_CHECKING:
    import torch

FINISHED_STATUSES = ("completed", "diverged")
MODEL_FILE = "model.pt"
MODEL_FORMAT = "dit-run-model"

METRIC_COLUMNS = (
    "milestone_tokens",
    "step",
    "tokens",
    "clips",
    "flops",
    "flops_6n",
    "train_loss",
    "validation_loss",
    "lr",
    "wall_time_s",
    "tokens_per_s",
)


def write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    """Write all metric rows to ``path`` as CSV, atomically (floats as ``repr``, so they read back exactly)."""
    columns = list(METRIC_COLUMNS)
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: repr(value) if isinstance(value, float) else value for key, value in ((k, row.get(k)) for k in columns)})
    atomic_write_text(path, buffer.getvalue())


def read_summary(run_dir: str | Path) -> dict | None:
    """The run's ``summary.json`` as a dict, or None when it is missing or unreadable."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_finished(run_dir: str | Path, resumable_hash: str) -> str | None:
    """The status of a run folder that finished (completed or diverged) with this config hash, else None."""
    summary = read_summary(run_dir)
    if (
        summary
        and summary.get("status") in FINISHED_STATUSES
        and summary.get("provenance", {}).get("resumable_config_hash") == resumable_hash
    ):
        return summary["status"]
    return None


def save_model(run_dir: str | Path, model_config: dict, state: dict[str, torch.Tensor], step: int) -> Path:
    """Write the run's model (a ``VideoDiT`` state dict) to ``checkpoints/model.pt`` atomically."""
    import torch  # here, not at the top: the runs table (pipeline.collect) reads run folders without torch

    path = Path(run_dir) / "checkpoints" / MODEL_FILE
    record = {"format": MODEL_FORMAT, "model_config": model_config, "model": state, "step": step}
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
    return path


class ModelFileError(ValueError):
    """A run's ``checkpoints/model.pt`` is unreadable (truncated, damaged) or not a model of ``save_model``; the
    message names the file."""


def load_trained_model(run_dir: str | Path, device: str | torch.device = "cpu", attention: str | None = None):
    """The model in a run folder's ``checkpoints/model.pt``, in eval mode, and its ``VideoDiTConfig``.

    ``attention`` overrides the backend recorded in the run (e.g. ``"sdpa"`` to sample on CPU a
    model trained with xformers). Loads with ``weights_only=True``. A file that cannot be read
    (truncated or damaged) or is not a model written by ``save_model`` raises ``ModelFileError``.
    """
    import pickle

    import torch

    from dit.model import VideoDiT, VideoDiTConfig

    path = Path(run_dir) / "checkpoints" / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained model (has the run in {run_dir} finished?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError) as error:
        raise ModelFileError(f"{path}: unreadable model file, truncated or damaged ({_first_sentence(error)}); "
                             "train the run again") from None
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        recorded = state.get("format") if isinstance(state, dict) else None
        raise ModelFileError(f"{path}: not a run model written by dit.train (format {recorded!r})")
    try:
        record = dict(state["model_config"])
        if attention is not None:
            record["attention"] = attention
        model_config = VideoDiTConfig(**{**record, "patch": tuple(record["patch"])})
        model = VideoDiT(model_config)
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ModelFileError(f"{path}: its model config or weights do not make a model ({type(error).__name__}: "
                             f"{_first_sentence(error)})") from None
    return model.to(device).eval(), model_config


def _first_sentence(error: BaseException) -> str:
    """The first sentence of an error's message (torch's messages run on for several), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(error).__name__


def write_run_summary(run_dir: Path, status: str, reason: str, config, metrics: list[dict], job: dict[str, Any],
                      resumable_hash: str) -> None:
    """Write ``summary.json``: the run's status, its settings (``config``, a ``dit.config.TrainConfig``),
    what it reached (``metrics``), the job's shared facts (``job``: size, shapes, FLOPs, device, ...) and provenance."""
    last = metrics[-1] if metrics else {}
    summary = {
        "status": status,
        "status_reason": reason,
        "run_id": config.run.id or Path(run_dir).name,
        "series": config.run.series,
        "latent_codec": config.data.latent,
        "batch_clips": config.batch.global_clips,
        "learning_rate": config.optimizer.lr,
        "seed": config.seed,
        "milestones_reached": len(metrics),
        "milestones_planned": len(config.schedule.milestones_tokens),
        "final_validation_loss": last.get("validation_loss"),
        "validation_weights": config.validation.weights,
        "ema_gamma": config.ema.gamma,
        "attention": config.model.attention,
        **job,
        "provenance": {**provenance(config.to_dict()), "resumable_config_hash": resumable_hash},
    }
    atomic_write_json(Path(run_dir) / "summary.json", summary)
