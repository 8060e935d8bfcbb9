"""AdamW and gradient clipping for many runs at once, each run with its own learning rate and norm.

``MemberParameters`` moves every parameter of a module whose parameters carry a leading member axis
(``dit.ensemble.EnsembleDiT``) into one ``(members, P)`` buffer, and their gradients into another:
each parameter becomes a view of its columns. A member's values are then one row, and a step of
AdamW for all members is a handful of operations on two ``(members, P)`` tensors, whatever the
number of layers.

``MemberAdamW`` is ``torch.optim.AdamW`` (decoupled weight decay, bias-corrected moments), row by
row: member ``m`` moves with its own learning rate ``lr[m]``, its gradient clipped by its own norm,
and a member whose ``active[m]`` is False does not move at all (its moments stay as they were).
"""

from __future__ import annotations

import math

import torch
from torch import nn

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
    """AdamW over ``MemberParameters``, one learning rate, gradient norm and activity flag per member."""

    def __init__(self, parameters: MemberParameters, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        self.parameters = parameters
        self.betas, self.eps, self.weight_decay = tuple(betas), float(eps), float(weight_decay)
        self.exp_avg = torch.zeros_like(parameters.values)
        self.exp_avg_sq = torch.zeros_like(parameters.values)
        self.steps = torch.zeros(parameters.members, dtype=torch.long)  # optimizer steps taken, per member

    def clip_coefficients(self, max_norm: float | None) -> torch.Tensor:
        """Per-member gradient scale ``min(1, max_norm / (norm + 1e-6))`` (ones without clipping), ``(members, 1)``."""
        if max_norm is None:
            return torch.ones(self.parameters.members, 1, device=self.exp_avg.device, dtype=self.exp_avg.dtype)
        norms = self.parameters.grad_norms()
        return (max_norm / (norms + CLIP_EPS)).clamp(max=1.0)[:, None]

    @torch.no_grad()
    def step(self, learning_rates: list[float], active: list[bool], max_grad_norm: float | None = None) -> None:
        """One step of each active member with ``learning_rates[m]``, its gradient clipped to ``max_grad_norm``.

        An inactive member gets a zero gradient and a zero learning rate: its parameters stay exactly
        as they are (and a non-finite gradient of a diverged member never reaches any number).
        """
        members = self.parameters.members
        if len(learning_rates) != members or len(active) != members:
            raise ValueError(f"need {members} learning rates and activity flags, got {len(learning_rates)}, {len(active)}")
        column = dict(device=self.exp_avg.device, dtype=self.exp_avg.dtype)
        grads = self.parameters.grads
        grads.masked_fill_(~torch.tensor(active, device=grads.device)[:, None], 0.0)
        grads.mul_(self.clip_coefficients(max_grad_norm))
        self.steps += torch.tensor(active, dtype=torch.long)
        beta1, beta2 = self.betas
        rates = [lr if moving else 0.0 for lr, moving in zip(learning_rates, active, strict=True)]
        steps = self.steps.clamp(min=1).tolist()
        step_size = torch.tensor([lr / (1 - beta1**s) for lr, s in zip(rates, steps)], **column)[:, None]
        correction = torch.tensor([math.sqrt(1 - beta2**s) for s in steps], **column)[:, None]
        values = self.parameters.values
        if self.weight_decay:
            values.mul_(1 - torch.tensor(rates, **column)[:, None] * self.weight_decay)
        self.exp_avg.lerp_(grads, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
        update = self.exp_avg / self.exp_avg_sq.sqrt().div_(correction).add_(self.eps)
        values.sub_(update.mul_(step_size))

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "steps": self.steps,
                "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["exp_avg"].shape) != tuple(self.exp_avg.shape):
            raise ValueError(f"optimizer state of shape {tuple(state['exp_avg'].shape)} does not fit "
                             f"{tuple(self.exp_avg.shape)} (members, parameters)")
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.steps.copy_(state["steps"])
