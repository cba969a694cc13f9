"""Ctrl-C or SIGTERM during training: finish the current step, save a checkpoint, say how to continue.

SIGTERM (what ``kill``, ``timeout``, ``docker stop``, systemd and batch schedulers send) is
treated exactly like Ctrl-C. A command wraps its training in :func:`stop_at_step_boundary`; the
loop asks :func:`stop_requested` after each optimizer update and, when it is true, saves and
raises :class:`TrainingInterrupted` (``utility.cli.run_cli`` prints its message and exits 130
for SIGINT, 143 for SIGTERM: 128 + the signal, as shells report). A second signal stops at once,
without a checkpoint. Outside the context manager Ctrl-C raises KeyboardInterrupt as usual, and
a command run by ``run_cli`` turns SIGTERM into :class:`Terminated` (a KeyboardInterrupt), so
``finally`` blocks still release locks and remove temporary files.

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
_received: list[int] = []  # the signal that asked to stop (SIGINT or SIGTERM)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


def exit_status(signum: int) -> int:
    """What a shell reports for a process ended by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + signum


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a training loop: unwinds like Ctrl-C (``finally`` blocks run)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after saving a checkpoint; the message says how to
    resume, ``exit_status`` is 128 + the signal."""

    def __init__(self, message: str):
        super().__init__(message)
        self.exit_status = exit_status(_received[0] if _received else signal.SIGINT)


def _ask_to_stop(signum: int, frame: object) -> None:
    name = SIGNAL_NAMES.get(signum, f"signal {signum}")
    if _requested.is_set():
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    _received[:] = [signum]
    _requested.set()
    print(
        f"\n{name}: stopping after this step with a checkpoint ({name} again stops at once, without one)",
        file=sys.stderr,
        flush=True,
    )


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def terminate_like_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` instead of killing the process at
    once (for commands: a library leaves its host's signal handlers alone)."""
    with _handling(signal.SIGTERM, _terminate):
        yield


@contextlib.contextmanager
def ctrl_c_raises() -> Iterator[None]:
    """Within the block, Ctrl-C raises KeyboardInterrupt also in a process that inherited SIGINT
    as ignored (a background job of a script, ``nohup``), as a training loop answers it there
    (:func:`stop_at_step_boundary`): for a command that waits on others doing its training."""
    with _handling(signal.SIGINT, signal.default_int_handler):
        yield


@contextlib.contextmanager
def _handling(signum: int, handler: object) -> Iterator[None]:
    """``handler`` for ``signum`` within the block, the previous one restored after; nothing
    changes outside the main thread (signals reach the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


@contextlib.contextmanager
def stop_at_step_boundary() -> Iterator[None]:
    """Within the block, the first SIGINT or SIGTERM only asks the training loop to stop (see module doc)."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = {signum: signal.signal(signum, _ask_to_stop) for signum in STOP_SIGNALS}
    _requested.clear()
    _received.clear()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
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
