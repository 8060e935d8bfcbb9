"""Training many runs at once: forward and backward, AdamW, gradient clipping and the EMA of the weights.

``MemberParameters`` moves every parameter of a module whose parameters carry a leading member axis
(``dit.ensemble.EnsembleDiT``) into one ``(members, P)`` buffer, and their gradients into another:
each parameter becomes a view of its columns. A member's values are then one row, and a step of
AdamW for all members is a handful of operations on two ``(members, P)`` tensors, whatever the
number of layers.

``accumulate_gradients`` runs every member's forward and backward on its own clips; ``power_ema_decay``
is the decay of the EMA of the weights after a step. ``MemberAdamW`` is ``torch.optim.AdamW`` (fused), row by row: member ``m`` moves with its own learning
rate ``lr[m]``, its gradient clipped by its own norm, and a member whose ``active[m]`` is False does
not move at all (its moments stay as they were).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from dit.diffusion import NoiseSchedule, member_clip_losses, q_sample
from dit.ensemble import EnsembleDiT
from dit.text import PAD_ID

CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s: coefficient = max_norm / (norm + 1e-6)


class MemberParameters:
    """The parameters of ``module`` (each ``(members, ...)``) as views of one ``(members, P)`` buffer.

    Gradients accumulate in place into ``grads`` (``(members, P)``), so ``zero_grad`` is one fill.
    """

    def __init__(self, module: nn.Module, members: int):
        parameters = [p for p in module.parameters() if p.requires_grad]
        for parameter in parameters:
            if parameter.shape[0] != members:
                raise ValueError(f"a parameter of shape {tuple(parameter.shape)} has no leading axis of {members} members")
        sizes = [parameter[0].numel() for parameter in parameters]
        first = parameters[0]
        self.values = torch.empty(members, sum(sizes), dtype=first.dtype, device=first.device)
        self.grads = torch.zeros_like(self.values)
        offset = 0
        for parameter, size in zip(parameters, sizes, strict=True):
            columns = slice(offset, offset + size)
            self.values[:, columns].copy_(parameter.detach().reshape(members, size))
            parameter.data = self.values[:, columns].view(parameter.shape)
            parameter.grad = self.grads[:, columns].view(parameter.shape)
            offset += size
        self.parameters = parameters

    @property
    def members(self) -> int:
        return self.values.shape[0]

    def zero_grad(self) -> None:
        """Zero every gradient in place (autograd then adds into the views: ``set_to_none`` would break them)."""
        self.grads.zero_()

    def grad_norms(self) -> torch.Tensor:
        """Each member's gradient 2-norm over all its parameters, ``(members,)`` float32."""
        return torch.linalg.vector_norm(self.grads, dim=1)


class MemberAdamW:
    """AdamW over ``MemberParameters``, one learning rate, gradient norm and activity flag per member.

    Each member's row of the buffer is one parameter of ``torch.optim.AdamW(fused=True)`` in a param
    group of its own, so every member is updated by the same fused kernel, with the same rounding,
    as the same run trained alone, in one ``step`` call for all of them.
    """

    def __init__(self, parameters: MemberParameters, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        self.parameters = parameters
        self.rows = [nn.Parameter(parameters.values[m]) for m in range(parameters.members)]
        for member, row in enumerate(self.rows):
            row.grad = parameters.grads[member]
        fused = parameters.values.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.AdamW([{"params": [row]} for row in self.rows], lr=0.0, betas=tuple(betas),
                                           eps=eps, weight_decay=weight_decay, fused=fused)

    def clip_coefficients(self, max_norm: float | None) -> torch.Tensor:
        """Per-member gradient scale ``min(1, max_norm / (norm + 1e-6))``, ``(members, 1)``, as ``clip_grad_norm_``."""
        norms = self.parameters.grad_norms()
        return (max_norm / (norms + CLIP_EPS)).clamp(max=1.0)[:, None]

    @torch.no_grad()
    def step(self, learning_rates: list[float], active: list[bool], max_grad_norm: float | None = None) -> None:
        """One step of each active member with ``learning_rates[m]``, its gradient clipped to ``max_grad_norm``.

        An inactive member is left out of the step (its gradient is withheld): its parameters and
        moments stay exactly as they are.
        """
        members = self.parameters.members
        if len(learning_rates) != members or len(active) != members:
            raise ValueError(f"need {members} learning rates and activity flags, got {len(learning_rates)}, {len(active)}")
        if max_grad_norm is not None:
            self.parameters.grads.mul_(self.clip_coefficients(max_grad_norm))
        for member, (group, row) in enumerate(zip(self.optimizer.param_groups, self.rows, strict=True)):
            group["lr"] = learning_rates[member]
            row.grad = self.parameters.grads[member] if active[member] else None
        self.optimizer.step()
        for member, row in enumerate(self.rows):
            row.grad = self.parameters.grads[member]

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if len(state.get("param_groups", [])) != self.parameters.members:
            raise ValueError(f"optimizer state of {len(state.get('param_groups', []))} members does not fit "
                             f"{self.parameters.members}")
        self.optimizer.load_state_dict(state)


def power_ema_decay(step: int, gamma: float) -> float:
    """Decay of the power-function EMA after optimizer step ``step`` (from 1): ``(1 - 1/step) ** (gamma + 1)``.

    Its averaging window grows with the run (Karras et al. 2024, EDM2): at every step the EMA weighs
    the iterates so far by ``t ** gamma``, so it covers the same fraction of any run, short or long
    (``gamma = 6.94``: a relative width of 0.10). The first step's decay is 0 (the EMA starts at the weights).
    """
    return (1.0 - 1.0 / step) ** (gamma + 1.0)


def accumulate_gradients(model: EnsembleDiT, schedule: NoiseSchedule, video: torch.Tensor, timesteps: torch.Tensor,
                         noise: torch.Tensor, captions: torch.Tensor, process_clips: int, micro_clips: int,
                         autocast=contextlib.nullcontext) -> torch.Tensor:
    """Forward and backward of every member's epsilon-prediction loss on its clips, micro-batch by micro-batch.

    Inputs carry a leading member axis: clips in model space ``(M, B, C, F, H, W)``, timesteps ``(M, B)``,
    noise like the clips, caption ids ``(M, B, L)``. Each member's gradient is that of its mean loss
    over ``process_clips`` clips. Returns each member's loss summed over its clips, float64 ``(M,)``.
    """
    loss_sums = torch.zeros(video.shape[0], dtype=torch.float64, device=video.device)
    for start in range(0, process_clips, micro_clips):
        part = slice(start, start + micro_clips)
        clips, steps, draws, ids = video[:, part], timesteps[:, part], noise[:, part], captions[:, part]
        x_t = q_sample(schedule, clips.flatten(0, 1), steps.flatten(), draws.flatten(0, 1)).view_as(clips)
        with autocast():
            prediction = model(x_t, steps, ids, ids != PAD_ID)
        losses = member_clip_losses(prediction, draws)
        (losses.sum(dim=1) / process_clips).sum().backward()
        loss_sums += losses.detach().double().sum(dim=1)
    return loss_sums
