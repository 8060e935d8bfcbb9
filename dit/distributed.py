"""Where a process computes: its device, its numeric precision, and the process group of ``torchrun`` runs.

``resolve_device`` and ``resolve_precision`` read the ``device`` and ``precision`` settings the same
way for training, evaluation and sampling; ``autocast`` is the context a forward pass runs in.
Process groups use gloo on CPU and nccl on CUDA.
"""

from __future__ import annotations

import contextlib
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


#: Values of the ``precision`` setting: ``auto`` (bf16 autocast on CUDA, fp32 elsewhere), ``fp32``, ``bf16``.
PRECISIONS = ("auto", "fp32", "bf16")


class DeviceUnavailable(ValueError):
    """A requested device is no torch device name, or not present on this machine; the message names the setting."""


def resolve_device(requested: str, local_rank: int = 0, setting: str = "device") -> torch.device:
    """The torch device a ``device`` setting names.

    ``"auto"`` is CUDA when available, else the CPU; ``"cuda"`` (also through ``"auto"``) is the GPU of
    this process's ``local_rank`` (modulo the GPUs present); any other name (``"cpu"``, ``"cuda:1"``)
    is read by torch. A name torch does not read, or a CUDA device this machine lacks, raises
    ``DeviceUnavailable`` whose message starts with ``setting`` (``"device"``, ``"--device"``).
    """
    name = ("cuda" if torch.cuda.is_available() else "cpu") if requested == "auto" else requested
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise DeviceUnavailable(f"{setting} {requested!r} is not a torch device: {error}") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise DeviceUnavailable(f"{setting} {requested!r}: no CUDA device is available on this machine")
    count = torch.cuda.device_count()
    if device.index is None:
        return torch.device("cuda", local_rank % count)
    if device.index >= count:
        raise DeviceUnavailable(f"{setting} {requested!r}: this machine has {count} CUDA device(s)")
    return device


def resolve_precision(requested: str, device: torch.device) -> str:
    """The ``precision`` setting resolved for ``device``: ``"bf16"`` or ``"fp32"`` (``auto``: bf16 on CUDA)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {requested!r}")
    if requested == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return requested


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context forward passes run in: bf16 autocast on ``device`` for ``"bf16"``, none for ``"fp32"``."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def environment_rank() -> int:
    """This process's rank as ``torchrun`` sets it in the environment (0 without torchrun), readable before any
    process group exists."""
    return int(os.environ.get("RANK", "0"))


def environment_local_rank() -> int:
    """This process's rank on its node (``torchrun``'s ``LOCAL_RANK``, 0 without torchrun): the GPU it takes."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_process_context(requested_device: str, timeout_minutes: float = 30.0) -> ProcessContext:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = environment_rank()
    local_rank = environment_local_rank()
    device = resolve_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend, timeout=_dt.timedelta(minutes=timeout_minutes), rank=rank, world_size=world_size
        )
    return ProcessContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)
