"""Where a process runs: its device, and its place in a (possibly single-process) torchrun group."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist


def resolve_device(arg: Optional[str] = None) -> torch.device:
    """``None``/``"auto"``: the GPU if there is one, else the CPU; otherwise a torch device string
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``) checked against what this machine has."""
    if arg is None or arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(arg)
    except RuntimeError as error:
        raise ValueError(f"--device {arg!r} is not a device; use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {arg!r}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {arg!r}: only {torch.cuda.device_count()} GPU(s) here")
    return device


@dataclass
class DistributedContext:
    """Where this process sits in a (possibly single-process) run.

    ``rank``/``world_size`` are global; ``local_rank`` picks the GPU on a node.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the one process that logs, evaluates and writes checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()


def init_distributed(device_arg: Optional[str] = None) -> DistributedContext:
    """Join the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), or return a single-process context.

    Backend: NCCL when the device is a GPU, gloo on the CPU. Each process gets GPU ``LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_arg)
    if world_size == 1:
        return DistributedContext(device=device)
    if "RANK" not in os.environ:
        raise ValueError(
            f"WORLD_SIZE={world_size} is set but RANK is not: start the processes with torchrun (it sets both), "
            "or unset WORLD_SIZE for one process"
        )
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup_distributed(context: DistributedContext) -> None:
    """Leave the process group (a no-op for a single process).

    All processes meet at a barrier first: a process that tears its gloo connections down
    while a peer is still finishing its last collective makes that peer abort (SIGABRT).
    If a peer has already failed, the barrier raises and the group is left all the same
    (torchrun stops the remaining processes of a failed run).
    """
    if context.is_distributed and dist.is_initialized():
        try:
            dist.barrier()
        except RuntimeError:
            pass  # a peer is gone: nothing left to wait for
        dist.destroy_process_group()
