"""Process-wide settings the command-line tools choose for speed; never applied on import.

A library must not change its host process (allocator, floating-point mode, threads), so
every command calls :func:`apply_cli_process_defaults` when it starts (``utility.cli.run_cli``,
and ``scripts/benchmark_drift.py``); a Python user opts in the same way. OpenMP's wait policy, which must be
chosen before torch loads, is ``utility/openmp_wait.py``.

Flush-to-zero: CPUs handle subnormal floats (magnitudes below 1.2e-38 in float32) more slowly
than normal ones, on some CPUs in microcode at tens to hundreds of cycles each (products that
come out subnormal took 3.5x as long as normal ones on the AMD EPYC these numbers come from).
Treating them as zero changes results by less than float32's rounding of any normal value.

Threads: in a process that opted in, a probing task may ask for its own thread count
(``downstream.base.Expert.cpu_threads``; :func:`use_task_threads`, called where a probe is
built, so new, resumed, evaluated and applied probes and the analysis commands' cells all get
it), unless the user chose: ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` set.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from .cpu_allocator import keep_freed_memory_for_reuse

KEEP_SUBNORMALS_ENV = "MAM_KEEP_SUBNORMALS"  # =1: leave the CPU's floating-point mode alone
USER_THREAD_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


_process_threads: Optional[int] = None  # the count a task without a wish gets; None: not opted in


def apply_cli_process_defaults() -> dict[str, object]:
    """Glibc keeps freed memory for reuse (``utility.cpu_allocator``), the CPU flushes subnormal
    floats to zero, and tasks may choose their thread count (:func:`use_task_threads`). Call it
    first thing in a command, before torch starts its worker threads (they inherit the
    floating-point mode when created). Returns what applied."""
    global _process_threads
    flushed = False
    if os.environ.get(KEEP_SUBNORMALS_ENV) != "1":
        flushed = bool(torch.set_flush_denormal(True))  # False where the CPU cannot (non-x86)
    if _process_threads is None:  # the count before any task chose (a second call changes nothing)
        _process_threads = torch.get_num_threads()
    return {"allocator": keep_freed_memory_for_reuse(), "flush_denormal": flushed, "threads": _process_threads}


def use_task_threads(threads: Optional[int]) -> int:
    """Run ``threads`` torch threads for a task that asks (None: the count the process started
    with), where a command opted in and the user chose no number; elsewhere change nothing.
    Returns the count in use."""
    chosen_by_user = any(os.environ.get(name) for name in USER_THREAD_SETTINGS)
    if _process_threads is not None and not chosen_by_user:
        torch.set_num_threads(threads or _process_threads)
    return torch.get_num_threads()
