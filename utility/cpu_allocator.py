"""Keep freed activation memory in the process on Linux/glibc.

By default glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh
``mmap`` and unmaps it on free. A Transformer forward allocates and frees activations of tens
of megabytes per operation, so each one comes back as new pages that the kernel must zero and
fault in: about 20 % of a CPU forward pass here. Raising the mmap and trim thresholds makes
glibc reuse freed heap memory instead, as caching allocators (jemalloc, tcmalloc, PyTorch's
CUDA allocator) do. The cost is that the process keeps its peak heap after a pass.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1 << 30  # glibc's largest allowed value on 64-bit (HEAP_MAX / 2)
_TRIM_THRESHOLD_BYTES = 2**31 - 1


@functools.lru_cache(maxsize=1)
def keep_freed_memory_for_reuse() -> bool:
    """Raise glibc's mmap and trim thresholds once per process. Returns whether it applied
    (False off glibc, or when ``MAM_KEEP_GLIBC_DEFAULTS=1`` is set)."""
    if os.environ.get("MAM_KEEP_GLIBC_DEFAULTS") == "1":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): nothing to tune
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    )
