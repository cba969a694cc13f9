"""Process-wide settings the command-line tools choose for speed; never applied on import.

A library must not change its host process (allocator, floating-point mode, threads), so
``run_pretrain.py``, ``run_downstream.py``, ``hub.py`` and the benchmarks call
:func:`apply_cli_process_defaults` in their ``main``; a Python user opts in the same way.

Flush-to-zero: CPUs handle subnormal floats (magnitudes below 1.2e-38 in float32) in microcode,
tens to hundreds of times slower than normal ones. The LSTM heads of asr_ctc and phone_ctc
produce more and more of them as their cell states and gradients shrink during training, and
their updates then slowed down 20-60x (downstream/README.md, "Speed"). Treating subnormals as
zero changes results by less than float32's own rounding of any normal value.
"""

from __future__ import annotations

import functools
import os

import torch

from .cpu_allocator import keep_freed_memory_for_reuse

KEEP_SUBNORMALS_ENV = "MAM_KEEP_SUBNORMALS"  # =1: leave the CPU's floating-point mode alone


@functools.lru_cache(maxsize=1)
def apply_cli_process_defaults() -> dict[str, bool]:
    """Once per process: glibc keeps freed memory for reuse (``utility.cpu_allocator``) and the
    CPU flushes subnormal floats to zero. Call it before torch starts its worker threads (they
    inherit the setting when created). Returns what applied."""
    flushed = False
    if os.environ.get(KEEP_SUBNORMALS_ENV) != "1":
        flushed = bool(torch.set_flush_denormal(True))  # False where the CPU cannot (non-x86)
    return {"allocator": keep_freed_memory_for_reuse(), "flush_denormal": flushed}
