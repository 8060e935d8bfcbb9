"""Training engine: ``python -m dit.train --config FILE --out DIR``.

One run trains one model size at one (global batch, learning rate): AdamW, linear warmup, then a
**constant** learning rate, and at each token milestone of ``schedule.milestones_tokens`` it measures
the validation loss (``dit.diffusion.validation_loss``) and appends a row to ``DIR/metrics.csv``.

Exactness:

* The timesteps, noise and caption-dropout draws of step ``s`` come from a generator seeded by
  ``(seed, s)`` for the whole global batch; each process takes its slice. Together with the data
  loader's global order this makes 1 process and P processes (and any micro-batch split) compute the
  same update up to floating-point summation order.
* Checkpoints (``DIR/checkpoints/latest.pt``, written atomically every ``checkpoint.every_steps`` and
  at the end) hold the model, optimizer, data position, metrics so far and RNG states. A run restarted
  in the same ``DIR`` resumes from it and, on CPU, ends with metrics identical to an uninterrupted run.

Exit codes: 0 completed or diverged (``summary.json`` says which), 1 failed, 2 bad configuration,
75 preempted (SIGTERM or SIGUSR1: a checkpoint was written; run the same command again to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import math
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import yaml

from dit.atomic import atomic_path, atomic_write_json, atomic_write_text
from dit.config import ConfigError, TrainConfig, load_config
from dit.flops import paper_flops_per_token, six_n_flops_per_token
from dit.provenance import config_hash, provenance
from dit.sizes import get_size


class CheckpointError(RuntimeError):
    """The run folder's checkpoint exists but cannot be loaded; the message names the file."""


EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_CONFIG_ERROR = 2
EXIT_PREEMPTED = 75

CHECKPOINT_NAME = "latest.pt"
FINISHED_STATUSES = ("completed", "diverged")

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


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts (stable across processes and Python versions)."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def resumable_config_hash(config: TrainConfig) -> str:
    """Hash of everything that determines the run's numbers (progress display excluded)."""
    record = config.to_dict()
    record.pop("progress", None)
    return config_hash(record)


class PreemptionFlag:
    """Set by SIGTERM/SIGUSR1 (how SLURM preempts or warns before a time limit)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGUSR1):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name

    @property
    def raised(self) -> bool:
        return self.signal_name is not None


class Progress:
    """A progress line every few seconds for the person waiting; the metrics file is the record."""

    def __init__(self, total_tokens: int, interval_seconds: float, quiet: bool, enabled: bool) -> None:
        self.total_tokens = total_tokens
        self.interval_seconds = interval_seconds
        self.enabled = enabled and not quiet
        self._last_print = time.monotonic()
        self._last_tokens = 0
        self._last_time = time.monotonic()

    def update(self, step: int, tokens: int, loss: float, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_print < self.interval_seconds:
            return
        rate = (tokens - self._last_tokens) / max(now - self._last_time, 1e-9)
        remaining = (self.total_tokens - tokens) / rate if rate > 0 else float("inf")
        print(
            f"step {step} | tokens {tokens:,}/{self.total_tokens:,} ({100 * tokens / self.total_tokens:.0f}%)"
            f" | loss {loss:.5f} | {rate:,.0f} tokens/s | left {_format_seconds(remaining)}",
            file=sys.stderr,
            flush=True,
        )
        self._last_print = now
        self._last_time = now
        self._last_tokens = tokens

    def message(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)


def _format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Trainer:
    """Owns the model, optimizer, data stream and run folder of one training run."""

    def __init__(self, config: TrainConfig, out_dir: Path) -> None:
        from dit.data.loader import ClipLoader, ShardDataset
        from dit.diffusion import NoiseSchedule
        from dit.distributed import init_process_context
        from dit.model import VideoDiT, VideoDiTConfig

        self.config = config
        self.out_dir = Path(out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.context = init_process_context(config.device)
        self.device = self.context.device
        if config.threads:
            torch.set_num_threads(config.threads)
        micro_clips = config.validate_world_size(self.context.world_size)
        self.process_clips = config.batch.global_clips // self.context.world_size
        self.micro_clips = micro_clips

        manifest = Path(config.data.root) / "manifest.json"
        if not manifest.is_file():
            raise ConfigError(
                f"data.root: {config.data.root} is not a prepared data folder (no manifest.json); "
                "run `python -m dit.data prepare` first"
            )
        self.train_data = ShardDataset(config.data.root, split="train")
        self.validation_data = ShardDataset(config.data.root, split="validation")
        frames = config.data.frames or self.train_data.frames
        if frames > self.train_data.frames:
            raise ConfigError(
                f"data.frames: the model takes {frames} frames but {config.data.root} stores "
                f"{self.train_data.frames} frames per clip"
            )
        self.frames = frames
        self.tokenizer = self.train_data.tokenizer
        self.null_caption = torch.as_tensor(self.tokenizer.encode(""), dtype=torch.long)

        from dit.latent import CodecError, load_model_space

        try:
            self.space = load_model_space(config.data.latent)
            channels, model_frames, model_height, model_width = self.space.latent_shape(
                frames, self.train_data.height, self.train_data.width
            )
        except CodecError as error:
            raise ConfigError(f"data.latent: {error}") from None
        size = get_size(config.model.size)
        try:
            self.model_config = VideoDiTConfig.from_size(
                config.model.size,
                in_channels=channels,
                clip_frames=model_frames,
                clip_height=model_height,
                clip_width=model_width,
                patch=tuple(config.model.patch),
                vocab_size=self.tokenizer.vocab_size,
                caption_length=self.tokenizer.max_length,
                text_width=config.model.text_width,
                attention=config.model.attention,
            )
        except ValueError as error:
            raise ConfigError(f"model: {error}") from None
        self.size = size
        self.tokens_per_clip = self.model_config.tokens_per_clip
        self.tokens_per_step = self.tokens_per_clip * config.batch.global_clips
        self.parameters = size.non_embedding_parameters
        self.flops_per_token = paper_flops_per_token(self.parameters, self.tokens_per_clip, size.width)
        self.flops_6n_per_token = six_n_flops_per_token(self.parameters)
        self.total_tokens = config.total_tokens
        self.total_steps = math.ceil(self.total_tokens / self.tokens_per_step)

        torch.manual_seed(stable_seed(config.seed, "model-init"))
        model = VideoDiT(self.model_config).to(self.device)
        self.model = model
        if self.context.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(model, device_ids=device_ids)
        self.module = model
        self.schedule = NoiseSchedule(
            kind=config.diffusion.beta_schedule,
            num_timesteps=config.diffusion.num_timesteps,
            beta_start=config.diffusion.beta_start,
            beta_end=config.diffusion.beta_end,
        )
        opt = config.optimizer
        # The fused kernel (CPU and CUDA) is about 3x faster than the per-parameter loop for these models.
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay,
            fused=True,
        )
        self.loader = ClipLoader(
            self.train_data,
            global_batch_clips=config.batch.global_clips,
            seed=stable_seed(config.seed, "data-order"),
            rank=self.context.rank,
            world_size=self.context.world_size,
            frames=frames,
        )
        precision = config.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.precision = precision
        self.config_hash = resumable_config_hash(config)

        self.step = 0
        self.metrics: list[dict[str, float]] = []
        self.wall_time_s = 0.0
        self.interval_loss_sum = 0.0
        self.interval_steps = 0
        self.interval_train_time_s = 0.0
        self.interval_tokens = 0
        self.preemption = PreemptionFlag()
        self.progress = Progress(
            self.total_tokens, config.progress.interval_seconds, config.progress.quiet, self.context.is_main
        )

    # ---------------------------------------------------------------- helpers
    @property
    def tokens_seen(self) -> int:
        return self.step * self.tokens_per_step

    def learning_rate(self, step: int) -> float:
        """Linear warmup over ``warmup_steps`` then constant (``step`` counts from 0)."""
        warmup = self.config.optimizer.warmup_steps
        if warmup and step < warmup:
            return self.config.optimizer.lr * (step + 1) / warmup
        return self.config.optimizer.lr

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _pending_milestones(self) -> list[int]:
        done = {int(row["milestone_tokens"]) for row in self.metrics}
        return [m for m in self.config.schedule.milestones_tokens if m not in done]

    # ------------------------------------------------------------- checkpoint
    def save_checkpoint(self) -> None:
        if not self.context.is_main:
            self.context.barrier()
            return
        state = {
            "format": 1,
            "config_hash": self.config_hash,
            "model_config": self.model_config.to_dict(),
            "step": self.step,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "loader": self.loader.state_dict(),
            "metrics": self.metrics,
            "wall_time_s": self.wall_time_s,
            "interval": [self.interval_loss_sum, self.interval_steps, self.interval_train_time_s, self.interval_tokens],
            "torch_rng": torch.get_rng_state(),
        }
        with atomic_path(self.checkpoint_dir / CHECKPOINT_NAME) as tmp:
            torch.save(state, tmp)
        self.context.barrier()

    def try_resume(self) -> bool:
        path = self.checkpoint_dir / CHECKPOINT_NAME
        if not path.exists():
            return False
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated or foreign file: say which, keep it for inspection
            raise CheckpointError(
                f"checkpoint {path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                "it is left in place: move it away to restart this run from its start"
            ) from None
        if not isinstance(state, dict) or "step" not in state:
            raise CheckpointError(f"{path} is not a checkpoint of dit.train (no 'step'); it is left in place")
        if state.get("config_hash") != self.config_hash:
            raise ConfigError(
                f"{self.out_dir} holds a checkpoint of a different configuration "
                f"(hash {state.get('config_hash')} vs {self.config_hash}); use a new --out folder or delete it"
            )
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.loader.load_state_dict(state["loader"])
        self.step = int(state["step"])
        self.metrics = [dict(row) for row in state["metrics"]]
        self.wall_time_s = float(state["wall_time_s"])
        loss_sum, steps, train_time, tokens = state["interval"]
        self.interval_loss_sum, self.interval_steps = float(loss_sum), int(steps)
        self.interval_train_time_s, self.interval_tokens = float(train_time), int(tokens)
        torch.set_rng_state(state["torch_rng"])
        self.progress.message(f"resumed from {path} at step {self.step} ({self.tokens_seen:,} tokens)")
        return True

    # ------------------------------------------------------------ training
    def _step_draws(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Timesteps, noise and caption-dropout mask of this process's slice of global step ``step``."""
        global_clips = self.config.batch.global_clips
        generator = torch.Generator(device=self.device).manual_seed(stable_seed(self.config.seed, "step", step))
        c = self.model_config
        shape = (global_clips, c.in_channels, c.clip_frames, c.clip_height, c.clip_width)
        timesteps = torch.randint(
            0, self.schedule.num_timesteps, (global_clips,), generator=generator, device=self.device
        )
        noise = torch.randn(shape, generator=generator, device=self.device)
        dropout = torch.rand((global_clips,), generator=generator, device=self.device) < self.config.model.caption_dropout
        start = self.context.rank * self.process_clips
        part = slice(start, start + self.process_clips)
        return timesteps[part], noise[part], dropout[part]

    def train_step(self) -> float:
        """One optimizer step on one global batch; returns the global mean training loss."""
        from dit.diffusion import epsilon_mse

        batch = self.loader.next_batch()
        timesteps, noise, dropout = self._step_draws(self.step)
        video = self.space.encode(batch["video"].to(self.device, non_blocking=True))
        caption_ids = batch["caption_ids"].to(self.device)
        caption_ids = torch.where(dropout[:, None], self.null_caption.to(self.device)[None, :], caption_ids)
        caption_mask = caption_ids != 0

        lr = self.learning_rate(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        micro_batches = range(0, self.process_clips, self.micro_clips)
        for i, start in enumerate(micro_batches):
            part = slice(start, start + self.micro_clips)
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if (last or not self.context.distributed) else self.model.no_sync()
            with sync:
                with self._autocast():
                    losses = epsilon_mse(
                        self.model,
                        self.schedule,
                        video[part],
                        timesteps[part],
                        noise[part],
                        caption_ids=caption_ids[part],
                        caption_mask=caption_mask[part],
                    )
                losses = losses.float()
                (losses.sum() / self.process_clips).backward()
            loss_sum += losses.detach().double().sum()
        if self.config.optimizer.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.config.optimizer.grad_clip)
        global_loss = float(self.context.sum(loss_sum.reshape(1)).item()) / self.config.batch.global_clips
        if math.isfinite(global_loss) and global_loss <= self.config.divergence.max_loss:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return global_loss

    def validate(self) -> tuple[float, dict[int, float]]:
        """Validation loss on the fixed validation clips, timesteps and noise (all processes)."""
        from dit.diffusion import validation_loss, validation_timesteps

        cfg = self.config.validation
        from dit.latent import encoded_batches

        batches = self.validation_data.iter_batches(cfg.batch_clips, frames=self.frames)
        batches = encoded_batches(limit_clips(batches, cfg.max_clips), self.space)
        mine = (b for i, b in enumerate(batches) if i % self.context.world_size == self.context.rank)
        self.module.eval()
        try:
            with self._autocast():
                result = validation_loss(
                    self.module, self.schedule, mine, num_timesteps=cfg.timesteps, seed=cfg.seed, device=self.device
                )
        finally:
            self.module.train()
        steps = validation_timesteps(self.schedule, cfg.timesteps)
        local = [result.mean * result.clips, float(result.clips)] + [
            result.per_timestep.get(t, 0.0) * result.clips for t in steps
        ]
        if result.clips == 0:
            local = [0.0] * len(local)
        totals = self.context.sum(torch.tensor(local, dtype=torch.float64)).tolist()
        clips = totals[1]
        if clips == 0:
            raise RuntimeError(f"the validation split of {self.config.data.root} has no clips")
        per_timestep = {t: totals[2 + i] / clips for i, t in enumerate(steps)}
        return totals[0] / clips, per_timestep

    def record_milestone(self, milestone: int, validation: float, per_timestep: dict[int, float], lr: float) -> None:
        train_loss = self.interval_loss_sum / max(self.interval_steps, 1)
        row = {
            "milestone_tokens": milestone,
            "step": self.step,
            "tokens": self.tokens_seen,
            "clips": self.step * self.config.batch.global_clips,
            "flops": self.tokens_seen * self.flops_per_token,
            "flops_6n": self.tokens_seen * self.flops_6n_per_token,
            "train_loss": train_loss,
            "validation_loss": validation,
            "lr": lr,
            "wall_time_s": self.wall_time_s,
            "tokens_per_s": self.interval_tokens / self.interval_train_time_s if self.interval_train_time_s else 0.0,
        }
        for t, value in per_timestep.items():
            row[f"validation_loss_t{t:04d}"] = value
        self.metrics.append(row)
        self.interval_loss_sum, self.interval_steps = 0.0, 0
        self.interval_train_time_s, self.interval_tokens = 0.0, 0
        if self.context.is_main:
            write_metrics(self.out_dir / "metrics.csv", self.metrics)

    def run(self) -> str:
        """Train to the end of the budget; returns the final status."""
        self.preemption.install()
        try:
            return self._run()
        finally:
            self.preemption.restore()

    def _run(self) -> str:
        self.try_resume()
        if self.context.is_main:
            atomic_write_text(self.out_dir / "config.yaml", yaml.safe_dump(self.config.to_dict(), sort_keys=False))
            write_metrics(self.out_dir / "metrics.csv", self.metrics)  # header only until the first milestone
        checkpoint_every = self.config.checkpoint.every_steps
        loss = float("nan")
        while self.step < self.total_steps or self._pending_milestones():
            if self.context.any(self.preemption.raised):
                self.save_checkpoint()
                self.write_summary("preempted", f"stopped by {self.preemption.signal_name or 'a peer process'} "
                                   f"at step {self.step}; rerun the same command to resume")
                return "preempted"
            started = time.perf_counter()
            lr = self.learning_rate(self.step)
            loss = self.train_step()
            elapsed = time.perf_counter() - started
            if not math.isfinite(loss) or loss > self.config.divergence.max_loss:
                reason = (
                    f"training loss {loss} at step {self.step} "
                    f"({'non-finite' if not math.isfinite(loss) else f'above divergence.max_loss={self.config.divergence.max_loss}'})"
                )
                self.write_summary("diverged", reason)
                return "diverged"
            self.step += 1
            self.wall_time_s += elapsed
            self.interval_train_time_s += elapsed
            self.interval_tokens += self.tokens_per_step
            self.interval_loss_sum += loss
            self.interval_steps += 1
            self.progress.update(self.step, self.tokens_seen, loss)
            due = [m for m in self._pending_milestones() if m <= self.tokens_seen]
            if due:
                validation, per_timestep = self.validate()
                for milestone in due:
                    self.record_milestone(milestone, validation, per_timestep, lr)
                self.progress.message(
                    f"milestone {due[-1]:,} tokens: step {self.step}, validation loss {validation:.6f}"
                )
                if not math.isfinite(validation):
                    self.write_summary("diverged", f"validation loss {validation} at step {self.step}")
                    return "diverged"
            if self.step % checkpoint_every == 0:
                self.save_checkpoint()
        self.save_checkpoint()
        self.progress.update(self.step, self.tokens_seen, loss, force=True)
        self.write_summary("completed", "")
        return "completed"

    def write_summary(self, status: str, reason: str) -> None:
        if not self.context.is_main:
            return
        last = self.metrics[-1] if self.metrics else {}
        summary = {
            "status": status,
            "status_reason": reason,
            "run_id": self.config.run.id or self.out_dir.name,
            "series": self.config.run.series,
            "size": self.size.name,
            "non_embedding_parameters": self.parameters,
            "total_parameters": sum(p.numel() for p in self.module.parameters()),
            "width": self.size.width,
            "depth": self.size.depth,
            "heads": self.size.heads,
            "tokens_per_clip": self.tokens_per_clip,
            "clip_shape": [self.frames, self.train_data.height, self.train_data.width],
            "model_input_shape": [self.model_config.in_channels, self.model_config.clip_frames,
                                  self.model_config.clip_height, self.model_config.clip_width],
            "latent_codec": self.config.data.latent,
            "batch_clips": self.config.batch.global_clips,
            "batch_tokens": self.tokens_per_step,
            "micro_clips": self.micro_clips,
            "processes": self.context.world_size,
            "learning_rate": self.config.optimizer.lr,
            "seed": self.config.seed,
            "steps": self.step,
            "tokens": self.tokens_seen,
            "flops": self.tokens_seen * self.flops_per_token,
            "flops_6n": self.tokens_seen * self.flops_6n_per_token,
            "flops_per_token": self.flops_per_token,
            "milestones_reached": len(self.metrics),
            "milestones_planned": len(self.config.schedule.milestones_tokens),
            "final_validation_loss": last.get("validation_loss"),
            "wall_time_s": self.wall_time_s,
            "device": str(self.device),
            "precision": self.precision,
            "attention": self.config.model.attention,
            "model_config": self.model_config.to_dict(),
            "threads": torch.get_num_threads(),
            "provenance": {**provenance(self.config.to_dict()), "resumable_config_hash": self.config_hash},
        }
        atomic_write_json(self.out_dir / "summary.json", summary)


def limit_clips(batches, max_clips: int | None):
    """The first ``max_clips`` clips of a stream of loader batches (all of them for ``None``)."""
    if max_clips is None:
        yield from batches
        return
    remaining = max_clips
    for batch in batches:
        if remaining <= 0:
            return
        if len(batch["index"]) > remaining:
            batch = {key: value[:remaining] for key, value in batch.items()}
        remaining -= len(batch["index"])
        yield batch


def write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    """Write all metric rows to ``path`` as CSV, atomically."""
    columns = list(METRIC_COLUMNS)
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _format_value(row.get(key)) for key in columns})
    atomic_write_text(path, buffer.getvalue())


def _format_value(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    return value


def load_trained_model(run_dir: str | Path, device: str | torch.device = "cpu", attention: str | None = None):
    """The model of a run folder's latest checkpoint, in eval mode, and its ``VideoDiTConfig``.

    ``attention`` overrides the backend recorded in the run (e.g. ``"sdpa"`` to sample on CPU a
    model trained with xformers). Loads with ``weights_only=True``.
    """
    from dit.model import VideoDiT, VideoDiTConfig

    path = Path(run_dir) / "checkpoints" / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint (has the run in {run_dir} started?)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    record = dict(state["model_config"])
    if attention is not None:
        record["attention"] = attention
    model_config = VideoDiTConfig(**{**record, "patch": tuple(record["patch"])})
    model = VideoDiT(model_config)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), model_config


def read_summary(out_dir: Path) -> dict | None:
    import json

    path = Path(out_dir) / "summary.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def train(config: TrainConfig, out_dir: Path) -> str:
    """Run (or resume) one training run in ``out_dir``; returns its final status."""
    out_dir = Path(out_dir)
    previous = read_summary(out_dir)
    if previous and previous.get("status") in FINISHED_STATUSES and previous.get("provenance", {}).get(
        "resumable_config_hash"
    ) == resumable_config_hash(config):
        print(f"{out_dir}: already {previous['status']}; nothing to do", file=sys.stderr)
        return previous["status"]
    try:
        trainer = Trainer(config, out_dir)
    except ConfigError:
        raise
    except Exception as error:
        atomic_write_json(
            out_dir / "summary.json",
            {
                "status": "failed",
                "status_reason": f"{type(error).__name__} while setting up the run: {error}",
                "run_id": config.run.id or out_dir.name,
                "series": config.run.series,
                "provenance": {**provenance(config.to_dict()), "resumable_config_hash": resumable_config_hash(config)},
            },
        )
        raise
    try:
        return trainer.run()
    except Exception as error:  # recorded, then re-raised for a non-zero exit
        trainer.write_summary("failed", f"{type(error).__name__}: {error}")
        raise
    finally:
        trainer.context.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dit.train",
        description="Train one video DiT run (one size, batch size in clips and learning rate) and record "
        "the validation loss at each token milestone. Restarting with the same --out resumes.",
    )
    parser.add_argument("--config", required=True, type=Path, help="YAML training config (see dit/config.py)")
    parser.add_argument("--out", required=True, type=Path, help="run folder: metrics.csv, summary.json, checkpoints/")
    parser.add_argument("--quiet", action="store_true", help="no progress lines (the metrics file is the record)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        if args.quiet:
            config.progress.quiet = True
        status = train(config, args.out)
    except ConfigError as error:
        print(f"dit.train: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except CheckpointError as error:
        print(f"dit.train: {error}", file=sys.stderr)
        print(f"dit.train: run failed; see {args.out / 'summary.json'}", file=sys.stderr)
        return EXIT_FAILED
    except Exception:
        traceback.print_exc()
        print(f"dit.train: run failed; see {args.out / 'summary.json'}", file=sys.stderr)
        return EXIT_FAILED
    if status == "preempted":
        print(f"dit.train: preempted; checkpoint written to {args.out / 'checkpoints'}; rerun to resume", file=sys.stderr)
        return EXIT_PREEMPTED
    return EXIT_COMPLETED


if __name__ == "__main__":
    sys.exit(main())
