"""DDIM sampling (Song et al. 2021) with classifier-free guidance, from a ``dit.model.VideoDiT``.

Units: timesteps are integers in ``[0, num_timesteps)`` of a ``dit.diffusion.NoiseSchedule``; clips
are float ``(B, C, F, H, W)`` in model space. ``python -m dit.sample`` draws videos with it.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from dit.diffusion import NoiseSchedule, model_device


def ddim_timesteps(schedule: NoiseSchedule, steps: int) -> list[int]:
    """``steps`` distinct timesteps evenly spread from ``T - 1`` down to 0."""
    if not isinstance(steps, int) or not 1 <= steps <= schedule.num_timesteps:
        raise ValueError(f"steps must be an integer in [1, {schedule.num_timesteps}], got {steps!r}")
    if steps == 1:
        return [schedule.num_timesteps - 1]
    return [round(i * (schedule.num_timesteps - 1) / (steps - 1)) for i in range(steps - 1, -1, -1)]


@torch.no_grad()
def ddim_sample(
    model,
    schedule: NoiseSchedule,
    caption_ids: Optional[torch.Tensor],
    caption_mask: Optional[torch.Tensor],
    shape: Sequence[int],
    steps: int = 50,
    guidance_scale: float = 1.0,
    eta: float = 0.0,
    generator: Optional[torch.Generator] = None,
    caption_embeddings: Optional[torch.Tensor] = None,
    null_caption_embeddings: Optional[torch.Tensor] = None,
    clip_denoised: bool = True,
) -> torch.Tensor:
    """Generate clips with DDIM; returns float ``shape = (B, C, F, H, W)`` in model space.

    Args:
        model: a ``dit.model.VideoDiT``; run in eval mode, then restored.
        caption_ids, caption_mask: ``(B, caption_length)`` captions (mask None -> ids != PAD).
        shape: output shape ``(B, C, F, H, W)``.
        steps: sampling steps (forward passes, or twice as many with guidance).
        guidance_scale: classifier-free guidance ``eps_null + s (eps_cond - eps_null)``; 1.0 = no guidance
            (one forward pass per step). The null caption is the empty caption [BOS, PAD, ...]
            (``VideoDiT.null_caption``), or ``null_caption_embeddings`` for external text embeddings.
        eta: 0 = deterministic DDIM, 1 = DDPM-like noise.
        generator: random source for the initial noise and, if ``eta > 0``, the step noise; noise is drawn
            on the generator's device and moved to the model's.
        caption_embeddings: external caption embeddings (models with ``external_text_width``).
        clip_denoised: clamp each predicted clean clip to ``[-1, 1]``.

    The caption projection runs once per video and caption (``dit.flops.inference_flops_per_video``).
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 5:
        raise ValueError(f"shape must be (batch, channels, frames, height, width), got {shape}")
    batch = shape[0]
    device = model_device(model)
    guided = guidance_scale != 1.0
    was_training = model.training
    model.eval()
    try:
        context, context_mask = _caption_context(
            model, batch, caption_ids, caption_mask, caption_embeddings, null_caption_embeddings, guided
        )
        noise_device = generator.device if generator is not None else device
        x = torch.randn(shape, generator=generator, device=noise_device).to(device)
        alpha_bar = schedule.alphas_cumprod()
        sequence = ddim_timesteps(schedule, steps)
        for position, timestep in enumerate(sequence):
            previous = sequence[position + 1] if position + 1 < len(sequence) else None
            t = torch.full((batch,), timestep, dtype=torch.long, device=device)
            epsilon = _predicted_noise(model, x, t, context, context_mask, guidance_scale if guided else None)
            a_t = float(alpha_bar[timestep])
            a_prev = float(alpha_bar[previous]) if previous is not None else 1.0
            x, sigma = _ddim_step(x, epsilon, a_t, a_prev, eta, clip_denoised)
            if sigma > 0:
                x = x + sigma * torch.randn(shape, generator=generator, device=noise_device).to(device)
    finally:
        model.train(was_training)
    return x


def _caption_context(model, batch, caption_ids, caption_mask, caption_embeddings, null_caption_embeddings, guided):
    """Encoded captions ``(B, M, d)`` and mask; with guidance, the null caption's stacked after them ``(2B, M, d)``."""
    context, context_mask = model.encode_captions(batch, caption_ids, caption_mask, caption_embeddings)
    if not guided:
        return context, context_mask
    if caption_embeddings is None:
        null_ids, null_mask = model.null_caption(batch, device=model_device(model))
        null_context, null_mask = model.encode_captions(batch, null_ids, null_mask)
    else:
        if null_caption_embeddings is None:
            raise ValueError("guidance with external caption embeddings needs null_caption_embeddings")
        null_context, null_mask = model.encode_captions(batch, caption_embeddings=null_caption_embeddings)
    if null_context.shape[1] != context.shape[1]:
        raise ValueError(f"null caption has {null_context.shape[1]} tokens, captions have {context.shape[1]}")
    return torch.cat([context, null_context]), torch.cat([context_mask, null_mask])


def _predicted_noise(model, x, t, context, context_mask, guidance_scale: Optional[float]) -> torch.Tensor:
    """The model's epsilon (float32); with a ``guidance_scale``, guided against the null caption's half of ``context``."""
    if guidance_scale is None:
        return model.denoise(x, t, context, context_mask).float()
    conditional, unconditional = model.denoise(
        torch.cat([x, x]), torch.cat([t, t]), context, context_mask
    ).float().chunk(2)
    return unconditional + guidance_scale * (conditional - unconditional)


def _ddim_step(x, epsilon, a_t: float, a_prev: float, eta: float, clip_denoised: bool):
    """One DDIM update from ``alpha_bar = a_t`` to ``a_prev``: the next ``x`` before its noise, and that noise's sigma."""
    x0 = (x - math.sqrt(1 - a_t) * epsilon) / math.sqrt(a_t)
    if clip_denoised:
        x0 = x0.clamp(-1.0, 1.0)
        epsilon = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
    return math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * epsilon, sigma
