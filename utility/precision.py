"""Mixed precision: autocast settings and the matching gradient scaler."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

from . import cpu_features


@dataclass
class MixedPrecision:
    """Autocast settings and the matching gradient scaler.

    bfloat16 needs no loss scaling; float16 does (``scaler`` is then enabled); on the CPU, or
    when disabled, ``autocast()`` is a no-op and ``scaler`` passes gradients through unchanged.
    """

    device_type: str
    dtype: Optional[torch.dtype]
    scaler: torch.amp.GradScaler

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def mixed_precision(device: torch.device, enabled: bool = True, cpu_bf16: bool = False) -> MixedPrecision:
    """bf16 autocast on GPUs that support it, fp16 + GradScaler on older GPUs; on the CPU
    nothing, unless ``cpu_bf16`` asks for bf16 autocast (worth it only where
    ``utility.cpu_features.native_bf16``: there bf16 matrix products run several times faster)."""
    dtype = None
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif enabled and device.type == "cpu" and cpu_bf16:
        if not cpu_features.native_bf16():
            raise ValueError("bfloat16 autocast on this CPU has no fast kernels (needs AVX512-BF16 or AMX); turn it off")
        dtype = torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    return MixedPrecision(device_type=device.type, dtype=dtype, scaler=scaler)
