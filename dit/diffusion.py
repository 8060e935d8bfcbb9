"""DDPM noise schedule, the epsilon-prediction loss and the fixed validation protocol (DDIM: ``dit.ddim``).

Units: clips are counted in clips; timesteps are integers in ``[0, num_timesteps)``; model space is
float ``(B, C, F, H, W)`` in ``[-1, 1]``.

Validation protocol (our choice; the paper does not say how it fixes noise and timesteps): every
validation clip is noised at the same ``K`` timesteps (:func:`validation_timesteps`, the centres of
``K`` equal bins) with noise that depends only on ``(seed, clip index, timestep index k)``: each
clip's noise at timestep ``k`` is drawn from its own ``torch.Generator`` seeded by a BLAKE2b hash of
those three numbers. The same model therefore gets the bit-identical loss however the clips are
batched, and two models are compared on identical noise. Spread over noise seeds is measured by
:func:`validation_loss_spread`.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence, Union

import torch

from dit.config import TIMESTEP_SAMPLING
from dit.seeds import stable_seed

SCHEDULE_KINDS = ("linear", "cosine")


# --------------------------------------------------------------------------------------------------
# Noise schedule
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseSchedule:
    """Variance schedule of the forward (noising) process.

    Attributes:
        kind: ``"linear"`` (betas evenly spaced from ``beta_start`` to ``beta_end``, DDPM) or
            ``"cosine"`` (Nichol & Dhariwal 2021, offset ``cosine_offset``, betas capped at 0.999).
        num_timesteps: number of diffusion steps T.
        beta_start, beta_end: linear schedule end points (ignored by ``"cosine"``).
        cosine_offset: the cosine schedule's small offset ``s``.
    """

    kind: str = "linear"
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    cosine_offset: float = 0.008

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"NoiseSchedule.kind {self.kind!r} is not one of {', '.join(SCHEDULE_KINDS)}")
        if not isinstance(self.num_timesteps, int) or self.num_timesteps < 1:
            raise ValueError(f"NoiseSchedule.num_timesteps must be a positive integer, got {self.num_timesteps!r}")
        if self.kind == "linear":
            if not 0.0 < self.beta_start <= self.beta_end < 1.0:
                raise ValueError(
                    "NoiseSchedule needs 0 < beta_start <= beta_end < 1, "
                    f"got beta_start={self.beta_start}, beta_end={self.beta_end}"
                )
        elif not self.cosine_offset >= 0.0:
            raise ValueError(f"NoiseSchedule.cosine_offset must be >= 0, got {self.cosine_offset}")

    @classmethod
    def from_config(cls, diffusion) -> "NoiseSchedule":
        """The schedule a training config's ``diffusion`` section (``dit.config.DiffusionSection``) names:
        ``beta_schedule``, ``num_timesteps``, ``beta_start``, ``beta_end``; the cosine offset keeps its default."""
        return cls(
            kind=diffusion.beta_schedule,
            num_timesteps=diffusion.num_timesteps,
            beta_start=diffusion.beta_start,
            beta_end=diffusion.beta_end,
        )

    def betas(self) -> torch.Tensor:
        """``(T,)`` float64 betas."""
        if self.kind == "linear":
            return torch.linspace(self.beta_start, self.beta_end, self.num_timesteps, dtype=torch.float64)
        steps = torch.arange(self.num_timesteps + 1, dtype=torch.float64) / self.num_timesteps
        alpha_bar = torch.cos((steps + self.cosine_offset) / (1 + self.cosine_offset) * math.pi / 2) ** 2
        return torch.clamp(1 - alpha_bar[1:] / alpha_bar[:-1], max=0.999)

    def alphas_cumprod(self) -> torch.Tensor:
        """``(T,)`` float64 ``alpha_bar_t = prod_{s<=t} (1 - beta_s)``."""
        return torch.cumprod(1.0 - self.betas(), dim=0)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "num_timesteps": self.num_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "cosine_offset": self.cosine_offset,
        }


def _check_timesteps(schedule: NoiseSchedule, timesteps: torch.Tensor, batch: int) -> None:
    if timesteps.ndim != 1 or timesteps.shape[0] != batch:
        raise ValueError(f"timesteps must have shape (batch,) = ({batch},), got {tuple(timesteps.shape)}")
    if timesteps.is_floating_point():
        raise ValueError(f"timesteps must be integers, got dtype {timesteps.dtype}")
    low, high = torch.stack([timesteps.min(), timesteps.max()]).tolist() if batch else (0, 0)
    if low < 0 or high >= schedule.num_timesteps:
        raise ValueError(f"timesteps must lie in [0, {schedule.num_timesteps}), got range [{low}, {high}]")


def _per_clip(values: torch.Tensor, ndim: int) -> torch.Tensor:
    return values.reshape(-1, *([1] * (ndim - 1)))


# --------------------------------------------------------------------------------------------------
# Model space
# --------------------------------------------------------------------------------------------------


def video_to_model_space(video: torch.Tensor) -> torch.Tensor:
    """uint8 clips ``(B, F, H, W, C)`` -> float32 ``(B, C, F, H, W)`` in ``[-1, 1]``."""
    if video.dtype != torch.uint8 or video.ndim != 5:
        raise ValueError(
            f"video must be uint8 with shape (batch, frames, height, width, channels), got {video.dtype} {tuple(video.shape)}"
        )
    return (video.permute(0, 4, 1, 2, 3).to(torch.float32) / 127.5 - 1.0).contiguous()


def model_space_to_video(x: torch.Tensor) -> torch.Tensor:
    """float ``(B, C, F, H, W)`` (clamped to ``[-1, 1]``) -> uint8 ``(B, F, H, W, C)``."""
    if x.ndim != 5 or not x.is_floating_point():
        raise ValueError(f"x must be float with shape (batch, channels, frames, height, width), got {x.dtype} {tuple(x.shape)}")
    pixels = ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 4, 1).contiguous()


# --------------------------------------------------------------------------------------------------
# Forward process and loss
# --------------------------------------------------------------------------------------------------


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Noised clips ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise`` (same shape as ``x0``)."""
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} differs from x0 shape {tuple(x0.shape)}")
    _check_timesteps(schedule, timesteps, x0.shape[0])
    alpha_bar = schedule.alphas_cumprod().to(x0.device)[timesteps.to(x0.device)]
    signal = _per_clip(alpha_bar.sqrt().to(x0.dtype), x0.ndim)
    sigma = _per_clip((1.0 - alpha_bar).sqrt().to(x0.dtype), x0.ndim)
    return signal * x0 + sigma * noise


def epsilon_mse(
    model,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    timesteps: torch.Tensor,
    noise: torch.Tensor,
    caption_ids: Optional[torch.Tensor] = None,
    caption_mask: Optional[torch.Tensor] = None,
    caption_embeddings: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Per-clip mean squared error of the epsilon prediction, shape ``(B,)``, float32."""
    x_t = q_sample(schedule, x0, timesteps, noise)
    prediction = model(
        x_t, timesteps, caption_ids=caption_ids, caption_mask=caption_mask, caption_embeddings=caption_embeddings
    )
    return (prediction.float() - noise.float()).pow(2).flatten(1).mean(dim=1)


#: The golden ratio's fractional part, 1/phi: the additive step of the low-discrepancy timestep sequence.
GOLDEN_STEP = (math.sqrt(5.0) - 1.0) / 2.0


def training_timesteps(sampling: str, num_timesteps: int, seed: int, first_clip: int, clips: int,
                       generator: torch.Generator, device=None) -> torch.Tensor:
    """Timesteps (int64, ``(clips,)``) of a run's training clips ``first_clip .. first_clip + clips - 1``.

    ``"uniform"``: independent uniform draws from ``generator`` (the step's own generator).
    ``"low_discrepancy"``: clip ``n`` of the run (counted over the global batch, step after step) gets
    ``floor(T * frac(u + n / phi))``, with ``u`` uniform in [0, 1) from ``seed`` alone, as in the
    low-discrepancy sampler of Kingma et al. (2021, "Variational Diffusion Models") but along the run
    rather than within one batch: any stretch of the run's clips covers [0, T) evenly, so the gradient's
    noise from the timestep draw shrinks while every clip's timestep is still uniform over the seeds'
    starts (the loss it estimates is the same). ``generator`` is not used, so the step's other draws
    follow as they would. ``seed`` is the run's seed; ``first_clip`` counts the run's clips, so the
    timesteps of a step do not depend on how its clips are split among processes or micro-batches.
    """
    if sampling == "uniform":
        return torch.randint(0, num_timesteps, (clips,), generator=generator, device=device)
    if sampling == "low_discrepancy":
        start = torch.rand((), generator=torch.Generator().manual_seed(stable_seed(seed, "timestep-start")),
                           dtype=torch.float64)
        positions = torch.arange(first_clip, first_clip + clips, dtype=torch.float64)
        fractions = torch.remainder(start + positions * GOLDEN_STEP, 1.0)
        return (fractions * num_timesteps).floor().long().clamp_(max=num_timesteps - 1).to(device)
    raise ValueError(f"unknown timestep sampling {sampling!r}; choose one of {', '.join(TIMESTEP_SAMPLING)}")


# --------------------------------------------------------------------------------------------------
# Validation protocol
# --------------------------------------------------------------------------------------------------


def validation_timesteps(schedule: NoiseSchedule, count: int = 8) -> list[int]:
    """``count`` fixed timesteps: the centres of ``count`` equal bins of ``[0, T)``, ascending."""
    if not isinstance(count, int) or not 1 <= count <= schedule.num_timesteps:
        raise ValueError(f"count must be an integer in [1, {schedule.num_timesteps}], got {count!r}")
    return [int((2 * k + 1) * schedule.num_timesteps // (2 * count)) for k in range(count)]


def validation_noise_seed(seed: int, clip_index: int, timestep_index: int) -> int:
    """Stable 63-bit generator seed for the validation noise of one clip at one timestep index."""
    key = f"dit-validation-noise:{int(seed)}:{int(clip_index)}:{int(timestep_index)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def validation_noise(seed: int, clip_index: int, timestep_index: int, shape: Sequence[int]) -> torch.Tensor:
    """Standard normal float32 noise of ``shape`` (one clip), drawn on the CPU from its own generator."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(validation_noise_seed(seed, clip_index, timestep_index))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


@dataclass(frozen=True)
class ValidationResult:
    """Validation loss: mean over clips and timesteps, per timestep, and how many clips."""

    mean: float
    per_timestep: dict[int, float]
    clips: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "per_timestep": {str(t): v for t, v in self.per_timestep.items()}, "clips": self.clips}


_CAPTION_KEYS = ("caption_ids", "caption_mask", "caption_embeddings")


def _check_batch(batch: dict, position: int) -> None:
    for key in ("video", "index"):
        if key not in batch:
            raise KeyError(f"validation batch {position} has no {key!r} (keys: {sorted(batch)})")
    clips = batch["video"].shape[0]
    for key in ("index",) + _CAPTION_KEYS:
        if key in batch and batch[key].shape[0] != clips:
            raise ValueError(
                f"validation batch {position}: {key!r} has {batch[key].shape[0]} rows but 'video' has {clips} clips"
            )


def _take(batch: dict, start: int, stop: int) -> dict:
    return {key: value[start:stop] for key, value in batch.items()}


def _concatenate(parts: list[dict]) -> dict:
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def _rechunked(batches: Iterable[dict], chunk_clips: int):
    """The clips of ``batches`` in the same order, regrouped into chunks of exactly ``chunk_clips`` (last: fewer).

    Forward passes then see the same groups of clips whatever the loader's batch size, so results are
    bit-identical across batch splits.
    """
    pending: list[dict] = []
    pending_clips = 0
    for position, batch in enumerate(batches):
        _check_batch(batch, position)
        keys = set(batch) & {"video", "index", *_CAPTION_KEYS}
        if pending and keys != set(pending[0]):
            raise KeyError(f"validation batch {position} has keys {sorted(keys)}, earlier ones {sorted(pending[0])}")
        part = {key: batch[key] for key in keys}
        start, clips = 0, batch["video"].shape[0]
        while start < clips:
            take = min(chunk_clips - pending_clips, clips - start)
            pending.append(_take(part, start, start + take))
            pending_clips += take
            start += take
            if pending_clips == chunk_clips:
                yield _concatenate(pending)
                pending, pending_clips = [], 0
    if pending:
        yield _concatenate(pending)


def model_device(model) -> torch.device:
    """The device of the model's parameters (the CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def validation_loss(
    model,
    schedule: NoiseSchedule,
    batches: Iterable[dict],
    num_timesteps: int = 8,
    seed: int = 0,
    device: Optional[Union[str, torch.device]] = None,
    max_forward_clips: int = 256,
) -> ValidationResult:
    """Validation loss of ``model`` on fixed clips, timesteps and noise (module docstring).

    Args:
        model: a ``dit.model.VideoDiT``, run in eval mode, then restored; a chunk's captions are encoded once
            (``encode_captions``) and ``denoise`` runs at each timestep.
        batches: loader dicts with "video" uint8 ``(B, F, H, W, C)``, "index" ``(B,)`` clip indices and
            the caption keys ("caption_ids"/"caption_mask" or "caption_embeddings").
        num_timesteps: K, timesteps per clip (:func:`validation_timesteps`).
        seed: noise seed; the noise of clip ``i`` at timestep index ``k`` depends only on ``(seed, i, k)``.
        device: where the model runs (default: the model's device).
        max_forward_clips: most clips in one forward pass; clips are regrouped into chunks of exactly
            this many in the order given, so the loader's batch size does not change the result.

    Returns:
        ``ValidationResult``: ``mean`` over all (clip, timestep) pairs, ``per_timestep`` mean per
        timestep value, ``clips`` counted. Sums are exactly rounded (``math.fsum``) in float64.
        No clips at all gives ``clips = 0`` and NaN losses (a data-parallel rank without a batch).
    """

    def encode(captions, clips):
        return model.encode_captions(clips, **captions)

    def losses(x_t, timesteps, noise, context):
        prediction = model.denoise(x_t, timesteps, *context)
        return (prediction.float() - noise.float()).pow(2).flatten(1).mean(dim=1)[None]

    device = torch.device(device) if device is not None else model_device(model)
    return _validation_results(model, encode, losses, 1, schedule, batches, num_timesteps, seed, device,
                               max_forward_clips)[0]


@torch.no_grad()
def ensemble_validation_loss(
    ensemble,
    schedule: NoiseSchedule,
    batches: Iterable[dict],
    num_timesteps: int = 8,
    seed: int = 0,
    max_forward_clips: int = 256,
) -> list[ValidationResult]:
    """``validation_loss`` of every member of a ``dit.ensemble.EnsembleDiT``, one result per member.

    Every member sees the same clips, timesteps and noise: the noised clips are made once and given to
    all members, which then differ only in their parameters. ``max_forward_clips`` counts clips of one
    member (a forward pass holds ``members`` times as many).
    """
    members = ensemble.members

    def shared(tensor):
        return tensor.expand(members, *tensor.shape).contiguous()

    def encode(captions, clips):
        mask = shared(captions["caption_mask"]) if "caption_mask" in captions else None
        return ensemble.encode_captions(shared(captions["caption_ids"]), mask)

    def losses(x_t, timesteps, noise, context):
        prediction = ensemble.denoise(shared(x_t), shared(timesteps), *context)
        return member_clip_losses(prediction, shared(noise))

    device = model_device(ensemble)
    return _validation_results(ensemble, encode, losses, members, schedule, batches, num_timesteps, seed, device,
                               max_forward_clips)


def member_clip_losses(prediction: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Each member's per-clip mean squared error ``(M, B)`` (float32) from ``(M, B, ...)`` predictions and noise."""
    return (prediction.float() - noise.float()).pow(2).flatten(2).mean(dim=2)


def _validation_results(model, encode, losses_of, members, schedule, batches, num_timesteps, seed, device,
                        max_forward_clips) -> list[ValidationResult]:
    """The shared protocol. ``encode(captions, clips)`` encodes a chunk's captions once, for all its timesteps;
    ``losses_of(x_t, t, noise, context)`` gives ``(members, clips)`` per-clip losses from that encoding."""
    if not isinstance(max_forward_clips, int) or max_forward_clips < 1:
        raise ValueError(f"max_forward_clips must be a positive integer, got {max_forward_clips!r}")
    timesteps = validation_timesteps(schedule, num_timesteps)
    losses: list[dict[int, list[float]]] = [{k: [] for k in range(len(timesteps))} for _ in range(members)]
    seen: set[int] = set()
    was_training = model.training
    model.eval()
    try:
        for chunk in _rechunked(batches, max_forward_clips):
            indices = [int(i) for i in chunk["index"].tolist()]
            for index in indices:
                if index in seen:
                    raise ValueError(f"clip index {index} appears twice in the validation batches")
                seen.add(index)
            x0 = _to_model_space(chunk["video"]).to(device)
            captions = {key: chunk[key].to(device) for key in _CAPTION_KEYS if key in chunk}
            if "caption_ids" in captions:
                captions["caption_ids"] = captions["caption_ids"].long()
            context = encode(captions, len(indices))
            for k, timestep in enumerate(timesteps):
                noise = torch.stack([validation_noise(seed, index, k, x0.shape[1:]) for index in indices]).to(device)
                t = torch.full((len(indices),), timestep, dtype=torch.long, device=device)
                per_clip = losses_of(q_sample(schedule, x0, t, noise), t, noise, context).double().tolist()
                for member in range(members):
                    losses[member][k].extend(per_clip[member])
    finally:
        model.train(was_training)
    if not seen:  # e.g. a data-parallel rank that was handed no validation batch
        return [ValidationResult(mean=math.nan, per_timestep={t: math.nan for t in timesteps}, clips=0)] * members
    results = []
    for member_losses in losses:
        per_timestep = {timesteps[k]: math.fsum(values) / len(values) for k, values in member_losses.items()}
        mean = math.fsum(v for values in member_losses.values() for v in values) / (len(seen) * len(timesteps))
        results.append(ValidationResult(mean=mean, per_timestep=per_timestep, clips=len(seen)))
    return results


def _to_model_space(video: torch.Tensor) -> torch.Tensor:
    return video_to_model_space(video) if video.dtype == torch.uint8 else video.float()


@dataclass(frozen=True)
class ValidationSpread:
    """Validation loss over several noise seeds: mean, sample standard deviation, and each seed's value."""

    mean: float
    std: float
    per_seed: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "per_seed": {str(s): v for s, v in self.per_seed.items()}}


def validation_loss_spread(
    model,
    schedule: NoiseSchedule,
    batches: Union[Sequence[dict], Callable[[], Iterable[dict]]],
    seeds: Sequence[int],
    **options,
) -> ValidationSpread:
    """Spread of the validation protocol itself: :func:`validation_loss` under each noise seed.

    Args:
        batches: a sequence of batches, or a function returning a fresh iterable of them (the clips
            are read once per seed; a one-shot iterator is refused).
        seeds: at least two noise seeds.
        options: passed on to :func:`validation_loss` (``num_timesteps``, ``device``, ``max_forward_clips``).
    """
    seeds = list(seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must hold at least two distinct seeds, got {seeds}")
    if not callable(batches) and iter(batches) is batches:
        raise ValueError("batches is a one-shot iterator; pass a list or a function returning fresh batches")
    per_seed = {}
    for seed in seeds:
        source = batches() if callable(batches) else batches
        per_seed[seed] = validation_loss(model, schedule, source, seed=seed, **options).mean
    values = list(per_seed.values())
    return ValidationSpread(mean=statistics.fmean(values), std=statistics.stdev(values), per_seed=per_seed)
