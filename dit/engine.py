"""The training engine: one or many runs of one model shape, trained together in one process.

Runs that share everything but their learning rate, their seed and their names (model size, batch,
token schedule, precision, data, optimizer settings) train as one **ensemble**: their parameters
sit on a leading member axis (``dit.ensemble.EnsembleDiT``) and each step runs one sequence of
operations for all of them. A run trained alone is an ensemble of one. Per member:

* its own initialisation (``VideoDiT``'s, seeded by its seed), data order, and per-step timestep,
  noise and caption-dropout draws, seeded by ``(seed, step)`` for the whole global batch; members
  with one seed share them, as two runs with that seed would;
* its own learning-rate schedule, AdamW state and gradient clipping by its own gradient norm
  (``dit.member_training``);
* its own validation on the same fixed validation clips, timesteps and noise;
* its own run folder (``dit.run_folder``), exactly as if trained alone.

A member whose loss is non-finite or above ``divergence.max_loss`` is recorded as ``diverged`` and
frozen; the others go on. The job folder keeps the whole ensemble's resumable state in
``checkpoints/latest.pt`` (written atomically every ``checkpoint.every_steps`` steps and at the end),
so a rerun after SIGKILL ends with the metrics of an uninterrupted run; the last checkpoint, written
before the members' summaries, also holds the job's record (``job_record``), so a job killed before
its ``job.json`` gets it on the rerun (``dit.train``). Temporary files of a checkpoint write that was
killed are removed when the job starts. SIGTERM or SIGUSR1 writes a checkpoint and stops (exit 75
from ``dit.train``); a checkpoint of another set of members is refused. A device or attention
backend this machine lacks and a data folder without training or validation clips are refused as
``ConfigError`` before anything is written.
With ``torchrun`` each process takes its slice of every member's batch and the gradients of all
members are averaged in one all-reduce.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from dit.allocator import retain_freed_memory
from dit.atomic import atomic_path, atomic_write_text
from dit.attention import AttentionBackendUnavailable, resolve_backend
from dit.config import ConfigError, TrainConfig
from dit.data.loader import ClipLoader, ShardDataset, limit_clips
from dit.diffusion import NoiseSchedule, ensemble_validation_loss, training_timesteps, validation_timesteps
from dit.distributed import (
    DeviceUnavailable,
    autocast,
    environment_local_rank,
    init_process_context,
    resolve_device,
    resolve_precision,
)
from dit.ensemble import EnsembleDiT
from dit.flops import paper_flops_per_token, six_n_flops_per_token, training_flops_per_clip
from dit.latent import CodecError, encode_split, encoded_batches, load_model_space
from dit.matmul_rate import measure_matmul
from dit.member_training import MemberAdamW, MemberParameters, accumulate_gradients, power_ema_decay
from dit.model import VideoDiT, VideoDiTConfig
from dit.progress import PreemptionFlag, Progress
from dit.seeds import stable_seed
from dit.job_folder import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CheckpointError,
    read_checkpoint,
    remove_checkpoint_temporaries,
    write_job_record,
)
from dit.run_folder import save_model, write_metrics, write_run_summary
from dit.sizes import get_size


# Parameters are strided views of one (members, P) buffer (dit.member_training); autograd warns once
# that such gradients skip its preferred layout, which costs nothing measurable here.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


def check_runtime(config: TrainConfig, local_rank: int | None = None) -> torch.device:
    """The device this process trains on, checked before anything is written: ``ConfigError`` naming ``device``
    when this machine lacks it (``device: cuda`` without a GPU), or ``model.attention`` when the backend cannot
    run on it (``xformers`` on a CPU). ``local_rank``: this process's (``torchrun``'s ``LOCAL_RANK``, else 0)."""
    try:
        device = resolve_device(config.device, environment_local_rank() if local_rank is None else local_rank)
    except DeviceUnavailable as error:
        raise ConfigError(str(error)) from None
    try:
        resolve_backend(config.model.attention, device)
    except AttentionBackendUnavailable as error:
        raise ConfigError(f"model.attention: {error}") from None
    return device


@dataclass
class Member:
    """One run of the ensemble: its config, run folder and what it has recorded so far."""

    config: TrainConfig
    out_dir: Path
    resumable_hash: str
    metrics: list[dict] = field(default_factory=list)
    status: str = "active"  # active | diverged
    reason: str = ""
    interval_loss_sum: float = 0.0
    interval_steps: int = 0

    @property
    def run_id(self) -> str:
        return self.config.run.id or self.out_dir.name

    @property
    def active(self) -> bool:
        return self.status == "active"

    def state(self) -> dict:
        return {"metrics": self.metrics, "status": self.status, "reason": self.reason,
                "interval": [self.interval_loss_sum, self.interval_steps]}

    def load_state(self, state: dict) -> None:
        self.metrics = [dict(row) for row in state["metrics"]]
        self.status, self.reason = state["status"], state["reason"]
        self.interval_loss_sum, self.interval_steps = float(state["interval"][0]), int(state["interval"][1])


class EnsembleTrainer:
    """Owns the stacked model, optimizer, data streams and folders of one training job."""

    def __init__(self, members: list[Member], job_dir: Path) -> None:
        self.members = members
        self.job_dir = Path(job_dir)
        self.shared = config = members[0].config
        check_runtime(config)  # device and attention backend, as ConfigError
        self.context = init_process_context(config.device)
        self.device = self.context.device
        if config.threads:
            torch.set_num_threads(config.threads)
        self.malloc = retain_freed_memory() if self.device.type == "cpu" else {"applied": False, "reason": "not a CPU job"}
        self.micro_clips = config.validate_world_size(self.context.world_size)
        self.process_clips = config.batch.global_clips // self.context.world_size
        self._open_data(config)
        self._build_model(config)
        self.schedule = NoiseSchedule.from_config(config.diffusion)
        self.seeds = sorted({member.config.seed for member in members})
        self.loaders = {
            seed: ClipLoader(self.train_data, global_batch_clips=config.batch.global_clips,
                             seed=stable_seed(seed, "data-order"), rank=self.context.rank,
                             world_size=self.context.world_size, frames=self.frames)
            for seed in self.seeds
        }
        self.precision = resolve_precision(config.precision, self.device)
        self.step = 0
        self.wall_time_s = 0.0  # seconds in training steps
        self.validation_time_s = 0.0  # seconds in validation passes
        self.interval_train_time_s = 0.0
        self.interval_tokens = 0
        self.validation_passes = 0
        self.validation_batches: list[dict] | None = None  # this process's encoded validation batches
        self.preemption = PreemptionFlag()
        self.progress = Progress(self.total_tokens, config.progress.interval_seconds, config.progress.quiet,
                                 self.context.is_main)

    # ---------------------------------------------------------------- set-up
    def _open_data(self, config: TrainConfig) -> None:
        if not (Path(config.data.root) / "manifest.json").is_file():
            raise ConfigError(f"data.root: {config.data.root} is not a prepared data folder (no manifest.json); "
                              "run `python -m dit.data prepare` first")
        try:
            self.train_data = ShardDataset(config.data.root, split="train")
            self.validation_data = ShardDataset(config.data.root, split="validation")
        except (OSError, ValueError) as error:  # a damaged manifest or shard, named in the message
            raise ConfigError(f"data.root: {error}") from None
        for split, data in (("train", self.train_data), ("validation", self.validation_data)):
            if len(data) == 0:  # refused here, not at the first step or milestone
                raise ConfigError(f"data.root: {config.data.root} holds no {split} clips (its {split} split is empty); "
                                  "prepare it again from more videos")
        self.frames = config.data.frames or self.train_data.frames
        if self.frames > self.train_data.frames:
            raise ConfigError(f"data.frames: the model takes {self.frames} frames but {config.data.root} stores "
                              f"{self.train_data.frames} frames per clip")
        self.tokenizer = self.train_data.tokenizer
        self.null_caption = torch.as_tensor(self.tokenizer.encode(""), dtype=torch.long)
        try:
            self.space = load_model_space(config.data.latent)
            self.model_shape = self.space.latent_shape(self.frames, self.train_data.height, self.train_data.width)
        except CodecError as error:
            raise ConfigError(f"data.latent: {error}") from None
        self.encoded_clips, self.encoded_clips_facts = self._encode_training_split()

    def _encode_training_split(self) -> tuple[torch.Tensor | None, dict]:
        """The training split in model space, encoded once (``dit.latent.encode_split``), so that a step gathers
        its clips instead of encoding them; ``None`` where clips are cropped in time or it would not fit.

        A batch gathered from it must equal the same batch encoded on its own to the bit (checked here, on the
        first clips of the split in reverse order), or every step encodes its own batch, as before.
        """
        if self.frames != self.train_data.frames:
            return None, {"used": False, "reason": "clips are cropped in time"}
        encoded, reason = encode_split(self.space, self.train_data, self.device)
        if encoded is None:
            return None, {"used": False, "reason": reason}
        check = np.arange(min(self.process_clips, len(self.train_data)))[::-1].copy()
        alone = self.space.encode(self.train_data.get(check)["video"].to(self.device))
        if not torch.equal(alone, encoded[torch.from_numpy(check).to(self.device)]):
            return None, {"used": False, "reason": "a batch encoded on its own differs from the encoded split"}
        return encoded, {"used": True, "clips": len(self.train_data), "bytes": encoded.numel() * encoded.element_size()}

    def _build_model(self, config: TrainConfig) -> None:
        channels, frames, height, width = self.model_shape
        try:
            self.model_config = VideoDiTConfig.from_size(
                config.model.size, in_channels=channels, clip_frames=frames, clip_height=height, clip_width=width,
                patch=tuple(config.model.patch), vocab_size=self.tokenizer.vocab_size,
                caption_length=self.tokenizer.max_length, text_width=config.model.text_width,
                attention=config.model.attention, caption_table=config.model.caption_table,
            )
        except ValueError as error:
            raise ConfigError(f"model: {error}") from None
        self.size = get_size(config.model.size)
        solo_models = []
        for member in self.members:  # each member starts exactly where the same run trained alone starts
            torch.manual_seed(stable_seed(member.config.seed, "model-init"))
            solo_models.append(VideoDiT(self.model_config))
        self.model = EnsembleDiT.from_members(self.model_config, solo_models).to(self.device)
        self.parameters = MemberParameters(self.model, len(self.members))
        opt = config.optimizer
        self.optimizer = MemberAdamW(self.parameters, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)
        self.ema_values = self.parameters.values.clone()
        self.tokens_per_clip = self.model_config.tokens_per_clip
        self.tokens_per_step = self.tokens_per_clip * config.batch.global_clips
        self.non_embedding_parameters = self.size.non_embedding_parameters
        self.flops_per_token = paper_flops_per_token(self.non_embedding_parameters, self.tokens_per_clip, self.size.width)
        forward = self.model_config.forward_flops()
        self.forward_flops_per_clip = forward.total
        self.training_flops_per_clip = training_flops_per_clip(
            forward, self.model_config.caption_feature_width, self.model_config.caption_length, self.size.width,
            text_input_gradient=self.model_config.caption_features_have_gradient)
        self.flops_6n_per_token = six_n_flops_per_token(self.non_embedding_parameters)
        self.total_tokens = config.total_tokens
        self.total_steps = math.ceil(self.total_tokens / self.tokens_per_step)

    def _job_facts(self) -> dict:
        """What every member's summary says about the job's shared set-up."""
        size = self.size
        return {
            "size": size.name, "non_embedding_parameters": self.non_embedding_parameters,
            "total_parameters": self.parameters.values.shape[1], "width": size.width, "depth": size.depth,
            "heads": self.model_config.heads, "tokens_per_clip": self.tokens_per_clip,
            "clip_shape": [self.frames, self.train_data.height, self.train_data.width],
            "model_input_shape": list(self.model_shape), "batch_tokens": self.tokens_per_step,
            "micro_clips": self.micro_clips, "processes": self.context.world_size,
            "flops_per_token": self.flops_per_token, "device": str(self.device), "precision": self.precision,
            "model_config": self.model_config.to_dict(), "threads": torch.get_num_threads(), "malloc": self.malloc,
            "encoded_training_clips": self.encoded_clips_facts,
        }

    # ---------------------------------------------------------------- helpers
    @property
    def tokens_seen(self) -> int:
        return self.step * self.tokens_per_step

    def learning_rates(self, step: int) -> list[float]:
        """Each member's learning rate at ``step`` (from 0): linear warmup over ``warmup_steps``, then constant."""
        warmup = self.shared.optimizer.warmup_steps
        scale = (step + 1) / warmup if warmup and step < warmup else 1.0
        return [member.config.optimizer.lr * scale for member in self.members]

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.device)

    @contextlib.contextmanager
    def evaluated_weights(self):
        """Within it the model holds the weights a run is judged by: the EMA (``validation.weights: ema``) or raw."""
        if self.shared.validation.weights != "ema":
            yield
            return
        raw = self.parameters.values.clone()
        self.parameters.values.copy_(self.ema_values)
        try:
            yield
        finally:
            self.parameters.values.copy_(raw)

    def pending_milestones(self) -> list[int]:
        """Milestones the active members have not recorded yet (they all record the same ones)."""
        active = [member for member in self.members if member.active]
        done = {int(row["milestone_tokens"]) for row in active[0].metrics} if active else set()
        return [m for m in self.shared.schedule.milestones_tokens if m not in done] if active else []

    @property
    def layout(self) -> list[list[str]]:
        """The members this job trains, as ``[run folder, resumable config hash]`` pairs, in order."""
        return [[str(member.out_dir), member.resumable_hash] for member in self.members]

    # ------------------------------------------------------------- checkpoint
    def save_checkpoint(self, final: bool = False) -> None:
        """Write the job's resumable state; the ``final`` one (every member at its end, before any of their
        summaries is finalised) also holds the job's record (``job_record``), from which a rerun writes
        ``job.json`` if this process is killed before it does (``dit.train``)."""
        if self.context.is_main:
            state = {
                "format": CHECKPOINT_FORMAT,
                "layout": self.layout,
                "model_config": self.model_config.to_dict(),
                "step": self.step,
                "values": self.parameters.values,
                "ema_values": self.ema_values,
                "optimizer": self.optimizer.state_dict(),
                "loaders": {str(seed): loader.state_dict() for seed, loader in self.loaders.items()},
                "members": [member.state() for member in self.members],
                "timing": [self.wall_time_s, self.interval_train_time_s, self.interval_tokens],
                "validation_time_s": self.validation_time_s,
                "validation_passes": self.validation_passes,
            }
            if final:
                state["job_record"] = self.job_record()
            with atomic_path(self.job_dir / "checkpoints" / CHECKPOINT_NAME) as tmp:
                torch.save(state, tmp)
        self.context.barrier()

    def try_resume(self) -> bool:
        path = self.job_dir / "checkpoints" / CHECKPOINT_NAME
        if not path.exists():
            return False
        state = read_checkpoint(path)
        if state.get("layout") != self.layout:
            raise ConfigError(
                f"{path} belongs to another ensemble layout (members and configs "
                f"{[Path(out).name for out, _ in state.get('layout', [])]} vs {[m.out_dir.name for m in self.members]}); "
                "use a new job folder or delete the checkpoint to start over"
            )
        self.parameters.values.copy_(state["values"])
        self.ema_values.copy_(state["ema_values"])
        self.optimizer.load_state_dict(state["optimizer"])
        for seed, loader in self.loaders.items():
            loader.load_state_dict(state["loaders"][str(seed)])
        for member, member_state in zip(self.members, state["members"], strict=True):
            member.load_state(member_state)
        self.step = int(state["step"])
        self.wall_time_s, self.interval_train_time_s = float(state["timing"][0]), float(state["timing"][1])
        self.interval_tokens = int(state["timing"][2])
        self.validation_time_s = float(state.get("validation_time_s", 0.0))  # absent from older checkpoints
        self.validation_passes = int(state["validation_passes"])
        self.progress.message(f"resumed from {path} at step {self.step} ({self.tokens_seen:,} tokens)")
        return True

    # ------------------------------------------------------------ training
    def step_inputs(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """This process's slice of global step ``step`` for every member: clips in model space, timesteps,
        noise, caption ids (caption dropout applied), each with a leading member axis."""
        c, global_clips = self.model_config, self.shared.batch.global_clips
        part = slice(self.context.rank * self.process_clips, (self.context.rank + 1) * self.process_clips)
        by_seed = {}
        for seed in self.seeds:
            if self.encoded_clips is None:
                batch = self.loaders[seed].next_batch()
                video = self.space.encode(batch["video"].to(self.device, non_blocking=True))
                captions = batch["caption_ids"].to(self.device)
            else:  # whole stored clips (no crop), already encoded
                indices, _ = self.loaders[seed].next_clips()
                video = self.encoded_clips[torch.from_numpy(indices).to(self.device)]
                captions = self.train_data.caption_ids(indices).to(self.device)
            generator = torch.Generator(device=self.device).manual_seed(stable_seed(seed, "step", step))
            timesteps = training_timesteps(self.shared.diffusion.timestep_sampling, self.schedule.num_timesteps,
                                           seed, step * global_clips, global_clips, generator, self.device)
            noise = torch.randn((global_clips, c.in_channels, c.clip_frames, c.clip_height, c.clip_width),
                                generator=generator, device=self.device)
            dropout = torch.rand((global_clips,), generator=generator, device=self.device) < self.shared.model.caption_dropout
            captions = torch.where(dropout[part, None], self.null_caption.to(self.device)[None, :], captions)
            by_seed[seed] = (video, timesteps[part], noise[part], captions)
        stacked = [torch.stack([by_seed[m.config.seed][i] for m in self.members]) for i in range(4)]
        return tuple(stacked)

    def train_step(self) -> list[float]:
        """One optimizer step of every member on its own global batch; returns each member's mean training loss."""
        video, timesteps, noise, captions = self.step_inputs(self.step)
        self.parameters.zero_grad()
        loss_sums = accumulate_gradients(self.model, self.schedule, video, timesteps, noise, captions,
                                         self.process_clips, self.micro_clips, self.autocast)
        if self.context.distributed:
            self.context.average_(self.parameters.grads)
        losses = (self.context.sum(loss_sums) / self.shared.batch.global_clips).tolist()
        limit = self.shared.divergence.max_loss
        moving = [m.active and math.isfinite(loss) and loss <= limit for m, loss in zip(self.members, losses)]
        self.optimizer.step(self.learning_rates(self.step), moving, self.shared.optimizer.grad_clip)
        self.ema_values.lerp_(self.parameters.values, 1.0 - power_ema_decay(self.step + 1, self.shared.ema.gamma))
        return losses

    def validate(self) -> list[tuple[float, dict[int, float]]]:
        """Each member's validation loss and per-timestep losses on the fixed protocol (all processes)."""
        settings = self.shared.validation
        self.validation_passes += 1
        if self.validation_batches is None:  # the same clips every pass: read and encoded once
            batches = self.validation_data.iter_batches(settings.batch_clips, frames=self.frames)
            batches = encoded_batches(limit_clips(batches, settings.max_clips), self.space)
            self.validation_batches = [b for i, b in enumerate(batches) if i % self.context.world_size == self.context.rank]
        mine = iter(self.validation_batches)
        with self.autocast(), self.evaluated_weights():
            results = ensemble_validation_loss(self.model, self.schedule, mine, num_timesteps=settings.timesteps,
                                               seed=settings.seed, max_forward_clips=max(1, 256 // len(self.members)))
        steps = validation_timesteps(self.schedule, settings.timesteps)
        local = torch.tensor(
            [[0.0] * (2 + len(steps)) if r.clips == 0 else
             [r.mean * r.clips, float(r.clips), *(r.per_timestep[t] * r.clips for t in steps)] for r in results],
            dtype=torch.float64,
        )
        totals = self.context.sum(local).cpu()
        if float(totals[0, 1]) == 0:
            raise RuntimeError(f"the validation split of {self.shared.data.root} has no clips")
        return [(float(row[0] / row[1]), {t: float(row[2 + i] / row[1]) for i, t in enumerate(steps)}) for row in totals]

    # ------------------------------------------------------------ the loop
    def run(self) -> list[str]:
        """Train every member to the end of the budget; returns each member's final status."""
        if self.context.is_main:  # the only process that writes the job's checkpoint
            for stale in remove_checkpoint_temporaries(self.job_dir):
                self.progress.message(f"removed {stale}, left by a checkpoint write that was killed")
        self.preemption.install()
        try:
            self.try_resume()
            self._write_start_files()
            return self._train()
        finally:
            self.preemption.restore()

    def _train(self) -> list[str]:
        every = self.shared.checkpoint.every_steps
        losses = [math.nan] * len(self.members)
        while any(m.active for m in self.members) and (self.step < self.total_steps or self.pending_milestones()):
            if self.context.any(self.preemption.raised):
                self.save_checkpoint()
                reason = (f"stopped by {self.preemption.signal_name or 'a peer process'} at step {self.step}; "
                          "rerun the same command to resume")
                for member in self.members:
                    if member.active:
                        self.write_summary(member, "preempted", reason)
                return ["preempted" if m.active else m.status for m in self.members]
            started = time.perf_counter()
            losses = self.train_step()
            elapsed = time.perf_counter() - started
            self._check_training_losses(losses)
            self.step += 1
            self.wall_time_s += elapsed
            self.interval_train_time_s += elapsed
            self.interval_tokens += self.tokens_per_step
            for member, loss in zip(self.members, losses, strict=True):
                if member.active:
                    member.interval_loss_sum += loss
                    member.interval_steps += 1
            self.progress.update(self.step, self.tokens_seen, _mean_active(self.members, losses))
            due = [m for m in self.pending_milestones() if m <= self.tokens_seen]
            if due:
                self._record_milestones(due)
            if self.step % every == 0:
                self.save_checkpoint()
        self.save_checkpoint(final=True)
        self.progress.update(self.step, self.tokens_seen, _mean_active(self.members, losses), force=True)
        for member in self.members:
            if member.active:
                self._finish(member, "completed", "")
        self._write_job_file()
        return [member.status for member in self.members]

    def _check_training_losses(self, losses: list[float]) -> None:
        limit = self.shared.divergence.max_loss
        for member, loss in zip(self.members, losses, strict=True):
            if member.active and (not math.isfinite(loss) or loss > limit):
                why = "non-finite" if not math.isfinite(loss) else f"above divergence.max_loss={limit}"
                self._finish(member, "diverged", f"training loss {loss} at step {self.step} ({why})")

    def _record_milestones(self, due: list[int]) -> None:
        started = time.perf_counter()
        results = self.validate()
        self.validation_time_s += time.perf_counter() - started
        lrs = self.learning_rates(self.step - 1)
        for member, (validation, per_timestep), lr in zip(self.members, results, lrs, strict=True):
            if not member.active:
                continue
            for milestone in due:
                self.record_milestone(member, milestone, validation, per_timestep, lr)
            if not math.isfinite(validation):
                self._finish(member, "diverged", f"validation loss {validation} at step {self.step}")
        self.interval_train_time_s, self.interval_tokens = 0.0, 0
        shown = [r[0] for m, r in zip(self.members, results) if m.active]
        if shown:
            self.progress.message(f"milestone {due[-1]:,} tokens: step {self.step}, validation loss "
                                  + ", ".join(f"{value:.6f}" for value in shown))

    def record_milestone(self, member: Member, milestone: int, validation: float, per_timestep: dict[int, float],
                         lr: float) -> None:
        row = {
            "milestone_tokens": milestone,
            "step": self.step,
            "tokens": self.tokens_seen,
            "clips": self.step * self.shared.batch.global_clips,
            "flops": self.tokens_seen * self.flops_per_token,
            "flops_6n": self.tokens_seen * self.flops_6n_per_token,
            "train_loss": member.interval_loss_sum / max(member.interval_steps, 1),
            "validation_loss": validation,
            "lr": lr,
            "wall_time_s": self.wall_time_s,
            "tokens_per_s": self.interval_tokens / self.interval_train_time_s if self.interval_train_time_s else 0.0,
        }
        for t, value in per_timestep.items():
            row[f"validation_loss_t{t:04d}"] = value
        member.metrics.append(row)
        member.interval_loss_sum, member.interval_steps = 0.0, 0
        if self.context.is_main:
            write_metrics(member.out_dir / "metrics.csv", member.metrics)

    # ------------------------------------------------------------ outputs
    def _write_start_files(self) -> None:
        if not self.context.is_main:
            return
        for member in self.members:
            atomic_write_text(member.out_dir / "config.yaml", yaml.safe_dump(member.config.to_dict(), sort_keys=False))
            write_metrics(member.out_dir / "metrics.csv", member.metrics)  # header only until the first milestone

    def _finish(self, member: Member, status: str, reason: str) -> None:
        """End a member's run: its model and summary are written, and a diverged member is frozen."""
        member.status, member.reason = status, reason
        if self.context.is_main:
            index = self.members.index(member)
            with self.evaluated_weights():
                save_model(member.out_dir, self.model_config.to_dict(), self.model.member_state_dict(index), self.step)
        self.write_summary(member, status, reason)

    def job_record(self) -> dict:
        """What ``job.json`` says of the job's training, bar its members and matmul rate: steps, seconds of
        training steps and of validation passes, validation passes, model FLOPs and the model config."""
        return {"steps": self.step, "wall_time_s": self.wall_time_s, "validation_wall_time_s": self.validation_time_s,
                "validation_passes": self.validation_passes, "model_flops": self.model_flops(),
                "model_config": self.model_config.to_dict()}

    def _write_job_file(self) -> None:
        if self.context.is_main:
            members = [{"run_id": m.run_id, "run_dir": str(m.out_dir), "status": m.status} for m in self.members]
            # the yardstick of the job's FLOP/s, measured in the conditions its steps ran in (pipeline.performance)
            write_finished_job_record(self.job_dir, members, self.job_record(), measure_matmul(torch.get_num_threads()))

    def model_flops(self) -> dict[str, float]:
        """Matrix-product FLOPs this job computed (``dit.flops``' term-by-term count), all members included.

        Training: every step's forward and backward for every member (a frozen member is still computed);
        validation: every validation pass's forward passes, each clip at each protocol timestep.
        """
        members = len(self.members)
        training = self.step * self.shared.batch.global_clips * self.training_flops_per_clip * members
        limit = self.shared.validation.max_clips
        clips = len(self.validation_data) if limit is None else min(limit, len(self.validation_data))
        validation = (self.validation_passes * clips * self.shared.validation.timesteps
                      * self.forward_flops_per_clip * members)
        return {"training": training, "validation": validation, "total": training + validation}

    def write_summary(self, member: Member, status: str, reason: str) -> None:
        if not self.context.is_main:
            return
        config = member.config
        progress = {
            "steps": self.step, "tokens": self.tokens_seen, "flops": self.tokens_seen * self.flops_per_token,
            "flops_6n": self.tokens_seen * self.flops_6n_per_token, "wall_time_s": self.wall_time_s,
            "ensemble": {"job_dir": str(self.job_dir), "members": len(self.members), "member": self.members.index(member)},
        }
        write_run_summary(member.out_dir, status, reason, config, member.metrics, {**self._job_facts(), **progress},
                          member.resumable_hash)


def write_finished_job_record(job_dir: Path, members: list[dict], record: dict, matmul: dict | None,
                              recorded_after_restart: bool = False) -> None:
    """``job.json`` of a job that trained: its ``members`` (run id, folder, status), its training facts (``record``,
    ``EnsembleTrainer.job_record``'s, from the trainer or, ``recorded_after_restart``, from the job's final checkpoint)
    and the matmul rate."""
    write_job_record(job_dir, members, int(record["steps"]), float(record["wall_time_s"]), dict(record["model_flops"]),
                     record["model_config"], validation_wall_time_s=float(record["validation_wall_time_s"]),
                     matmul=matmul, recorded_after_restart=recorded_after_restart)


def _mean_active(members: list[Member], losses: list[float]) -> float:
    values = [loss for member, loss in zip(members, losses) if member.active and math.isfinite(loss)]
    return sum(values) / len(values) if values else math.nan
