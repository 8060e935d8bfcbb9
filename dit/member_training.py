"""Training many runs at once: forward and backward, AdamW, gradient clipping and the EMA of the weights.

``MemberParameters`` moves every parameter of a module whose parameters carry a leading member axis
(``dit.ensemble.EnsembleDiT``) into one ``(members, P)`` buffer, and their gradients into another:
each parameter becomes a view of its columns. A member's values are then one row, and a step of
AdamW for all members is a handful of operations on two ``(members, P)`` tensors, whatever the
number of layers.

``accumulate_gradients`` runs every member's forward and backward on its own clips; ``power_ema_decay``
is the decay of the EMA of the weights after a step. ``MemberAdamW`` is fused AdamW, row by row: member
``m`` moves with its own learning rate ``lr[m]``, its gradient clipped by its own norm, and a member
whose ``active[m]`` is False does not move at all (its moments stay as they were).
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

    def clip_grads_(self, max_norm: float) -> None:
        """Scale each member's gradient by ``min(1, max_norm / (norm + 1e-6))`` of its own norm, as ``clip_grad_norm_``."""
        self.grads.mul_((max_norm / (self.grad_norms() + CLIP_EPS)).clamp(max=1.0)[:, None])


class MemberAdamW:
    """AdamW over ``MemberParameters``, one learning rate, gradient norm and activity flag per member.

    Member ``m``'s row is updated by ``torch._fused_adamw_``, the kernel behind
    ``torch.optim.AdamW(fused=True)``, with the arguments that optimizer gives it for a param group of
    that one row: so every member moves, to the bit, as the same run trained alone with fused AdamW.
    Members with one learning rate share one kernel call (the kernel updates each tensor of its list
    on its own). ``torch.optim.AdamW`` itself is not used: constructing it imports ``torch._dynamo``
    (two to three seconds of every training process's start on a CPU), and its ``step`` adds
    Python bookkeeping per param group to every step. ``state_dict`` has ``torch.optim.AdamW``'s
    format (``state`` per member index: ``step``, ``exp_avg``, ``exp_avg_sq``; one param group per
    member), so checkpoints of either load into the other.
    """

    def __init__(self, parameters: MemberParameters, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if parameters.values.device.type not in ("cpu", "cuda"):
            raise ValueError(f"fused AdamW runs on cpu or cuda, not {parameters.values.device.type}")
        self.parameters = parameters
        self.betas, self.eps, self.weight_decay = (float(betas[0]), float(betas[1])), float(eps), float(weight_decay)
        values = parameters.values
        self.exp_avg = torch.zeros_like(values)
        self.exp_avg_sq = torch.zeros_like(values)
        # One step count per member, a float32 scalar on the parameters' device, as fused AdamW keeps it; a member
        # has AdamW state (in ``state_dict``) once its count is above 0.
        self.steps = [torch.zeros((), dtype=torch.float32, device=values.device) for _ in range(parameters.members)]
        self.learning_rates = [0.0] * parameters.members  # each member's last, for ``state_dict``'s param groups

    @torch.no_grad()
    def step(self, learning_rates: list[float], active: list[bool], max_grad_norm: float | None = None) -> None:
        """One step of each active member with ``learning_rates[m]``, its gradient clipped to ``max_grad_norm``.

        An inactive member is left out of the step: its parameters, moments and step count stay exactly
        as they are.
        """
        members = self.parameters.members
        if len(learning_rates) != members or len(active) != members:
            raise ValueError(f"need {members} learning rates and activity flags, got {len(learning_rates)}, {len(active)}")
        if max_grad_norm is not None:
            self.parameters.clip_grads_(max_grad_norm)
        by_rate: dict[float, list[int]] = {}
        for member, (rate, moving) in enumerate(zip(learning_rates, active, strict=True)):
            self.learning_rates[member] = float(rate)
            if moving:
                by_rate.setdefault(float(rate), []).append(member)
        values, grads = self.parameters.values, self.parameters.grads
        for rate, rows in by_rate.items():
            steps = [self.steps[m] for m in rows]
            torch._foreach_add_(steps, 1)
            torch._fused_adamw_(
                [values[m] for m in rows], [grads[m] for m in rows], [self.exp_avg[m] for m in rows],
                [self.exp_avg_sq[m] for m in rows], [], steps, amsgrad=False, lr=rate, beta1=self.betas[0],
                beta2=self.betas[1], weight_decay=self.weight_decay, eps=self.eps, maximize=False,
                grad_scale=None, found_inf=None,
            )

    def state_dict(self) -> dict:
        """``torch.optim.AdamW(fused=True)``'s state dict for one param group per member (tensors are copies)."""
        state = {
            m: {"step": self.steps[m].clone(), "exp_avg": self.exp_avg[m].clone(), "exp_avg_sq": self.exp_avg_sq[m].clone()}
            for m in range(self.parameters.members) if self.steps[m] > 0
        }
        groups = [
            {"lr": self.learning_rates[m], "betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay,
             "amsgrad": False, "foreach": None, "maximize": False, "capturable": False, "differentiable": False,
             "fused": True, "decoupled_weight_decay": True, "params": [m]}
            for m in range(self.parameters.members)
        ]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state: dict) -> None:
        groups = state.get("param_groups", [])
        if len(groups) != self.parameters.members:
            raise ValueError(f"optimizer state of {len(groups)} members does not fit {self.parameters.members}")
        if any(list(group.get("params", [])) != [m] for m, group in enumerate(groups)):
            raise ValueError("optimizer state is not one param group per member, in member order")
        self.exp_avg.zero_()
        self.exp_avg_sq.zero_()
        for m, group in enumerate(groups):
            self.learning_rates[m] = float(group["lr"])
            saved = state["state"].get(m)
            self.steps[m].zero_()
            if saved is not None:
                self.steps[m].copy_(saved["step"])
                self.exp_avg[m].copy_(saved["exp_avg"])
                self.exp_avg_sq[m].copy_(saved["exp_avg_sq"])


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
