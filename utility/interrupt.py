"""Ctrl-C during training: finish the current step, save a checkpoint, say how to continue.

A command wraps its training in :func:`stop_at_step_boundary`; the loop asks
:func:`stop_requested` after each optimizer update and, when it is true, saves and raises
:class:`TrainingInterrupted` (``utility.cli.run_cli`` prints its message and exits 130).
A second Ctrl-C stops at once, without a checkpoint. Outside the context manager Ctrl-C
raises KeyboardInterrupt as usual.

    with stop_at_step_boundary():
        while step < total_steps:
            ...  # one update
            if stop_requested(context):
                save()
                raise TrainingInterrupted(f"interrupted at step {step}: ...; continue with ...")
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator, Optional

import torch
import torch.distributed as dist

from .process_group import DistributedContext

_requested = threading.Event()


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C after saving a checkpoint; the message says how to resume."""


def _ask_to_stop(signum: int, frame: object) -> None:
    if _requested.is_set():
        raise KeyboardInterrupt
    _requested.set()
    print(
        "\nCtrl-C: stopping after this step with a checkpoint (Ctrl-C again stops at once, without one)",
        file=sys.stderr,
        flush=True,
    )


@contextlib.contextmanager
def stop_at_step_boundary() -> Iterator[None]:
    """Within the block, the first SIGINT only asks the training loop to stop (see module doc)."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGINT, _ask_to_stop)
    _requested.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()


def stop_requested(context: Optional[DistributedContext] = None) -> bool:
    """Whether Ctrl-C asked to stop; under DDP, whether any process was asked (all agree)."""
    requested = _requested.is_set()
    if context is not None and context.is_distributed:
        flag = torch.tensor([float(requested)], device=context.device if context.device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        requested = bool(flag.item())
    return requested


def ignore_interrupts_in_worker(_: int = 0) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C in a terminal reaches the whole process group; the
    workers leave it to the main process, which stops at the next step boundary."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
