"""Process-wide settings the command-line tools choose for speed; never applied on import.

A library must not change its host process (allocator, floating-point mode, threads), so
``run_pretrain.py``, ``run_downstream.py``, ``hub.py`` and the benchmarks call
:func:`apply_cli_process_defaults` in their ``main``; a Python user opts in the same way.

Flush-to-zero: CPUs handle subnormal floats (magnitudes below 1.2e-38 in float32) more slowly
than normal ones, on some CPUs in microcode at tens to hundreds of cycles each (products that
come out subnormal took 3.5x as long as normal ones on the AMD EPYC these numbers come from).
Treating them as zero changes results by less than float32's rounding of any normal value.

Threads: ``threads`` (a task's choice, see ``downstream.base.Expert.cpu_threads``) applies only
when the user has not chosen: neither ``OMP_NUM_THREADS`` nor ``MKL_NUM_THREADS`` is set.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from .cpu_allocator import keep_freed_memory_for_reuse

KEEP_SUBNORMALS_ENV = "MAM_KEEP_SUBNORMALS"  # =1: leave the CPU's floating-point mode alone
USER_THREAD_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def apply_cli_process_defaults(threads: Optional[int] = None) -> dict[str, object]:
    """Glibc keeps freed memory for reuse (``utility.cpu_allocator``), the CPU flushes subnormal
    floats to zero, and torch runs ``threads`` threads unless the user chose a number. Call it
    first thing in a command, before torch starts its worker threads (they inherit the
    floating-point mode when created). Returns what applied."""
    flushed = False
    if os.environ.get(KEEP_SUBNORMALS_ENV) != "1":
        flushed = bool(torch.set_flush_denormal(True))  # False where the CPU cannot (non-x86)
    chosen_by_user = any(os.environ.get(name) for name in USER_THREAD_SETTINGS)
    if threads is not None and not chosen_by_user:
        torch.set_num_threads(threads)
    return {"allocator": keep_freed_memory_for_reuse(), "flush_denormal": flushed, "threads": torch.get_num_threads()}
