"""Process-group set-up for single-process and ``torchrun`` runs (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessContext:
    """Where this process sits: rank, world size, local rank and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a float64 CPU/CUDA tensor over all processes (identity for one process)."""
        if self.distributed:
            values = values.to(self.device)
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def average_(self, values: torch.Tensor) -> torch.Tensor:
        """Replace ``values`` in place by its mean over all processes (identity for one process)."""
        if self.distributed:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            values.div_(self.world_size)
        return values

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is true on any process."""
        if not self.distributed:
            return flag
        value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when available; an explicit ``cuda`` without a GPU is an error."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device: 'cuda' was requested but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_process_context(requested_device: str, timeout_minutes: float = 30.0) -> ProcessContext:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend, timeout=_dt.timedelta(minutes=timeout_minutes), rank=rank, world_size=world_size
        )
    return ProcessContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)
