"""What this CPU can do fast: its model name, the instruction-set features that decide bf16 and
float32 speed, and whether bfloat16 arithmetic is native here.

Native bfloat16 means AVX512-BF16 or AMX on x86 (Intel Cooper Lake / Sapphire Rapids and later,
AMD Zen 4 and later), BF16 on ARM. Elsewhere oneDNN emulates bfloat16 with float32
instructions, which is slower than float32 itself (about 6x on an AVX2-only AMD EPYC in
this project's measurements). ``torch.backends.cpu.get_cpu_capability()`` does not tell these
apart ("AVX512" covers CPUs with and without AVX512-BF16), and neither does oneDNN's own check,
which accepts any AVX512 CPU; so the kernel's feature flags decide.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

from .typed_config import check_choice

CPUINFO = Path("/proc/cpuinfo")
# Features printed beside speed numbers: float32 vector width, then native bf16 / matrix units.
REPORTED_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16")
NATIVE_BF16_FEATURES = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # bf16: ARM's name


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The feature flags the kernel reports for the first CPU (empty off Linux)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, ARM
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively and oneDNN is there to use it."""
    return torch.backends.mkldnn.is_available() and bool(cpu_flags() & NATIVE_BF16_FEATURES)


def emulated_bf16_note() -> str:
    """Why bfloat16 is slow on this CPU (for warnings where it runs without native support)."""
    return (
        f"this CPU ({cpu_model()}) has no native bfloat16 (AVX512-BF16, AMX or BF16), so bfloat16 is emulated "
        "and slower than float32 (about 6x for extraction on an AVX2-only AMD EPYC); float32 is faster here"
    )


def cpu_report() -> dict[str, object]:
    """The CPU model, its reported features, and torch's view of it: for benchmark output."""
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "features": [name for name in REPORTED_FEATURES if name in flags],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16(),
    }


CPU_BF16_CHOICES = ("auto", "on", "off")


def cpu_bf16_choice(setting: str, name: str = "runner.cpu_bf16") -> tuple[bool, str]:
    """Whether to run CPU autocast in bfloat16 for ``setting`` (auto / on / off; YAML's true and
    false arrive as on / off), and the reason, for the log.

    ``auto`` takes bfloat16 exactly where it is native (:func:`native_bf16`); ``on`` insists and
    is refused where it is not, because emulated bfloat16 is slower than float32."""
    check_choice(name, setting, CPU_BF16_CHOICES)
    native = native_bf16()
    features = ", ".join(sorted(cpu_flags() & NATIVE_BF16_FEATURES)) or "no AVX512-BF16, AMX or BF16"
    if setting == "off":
        return False, f"{name}=off: float32"
    if setting == "on" and not native:
        raise ValueError(
            f"{name}=on: this CPU ({cpu_model()}) has no native bfloat16 ({features}), where bfloat16 runs slower "
            f"than float32; set {name}=auto or off"
        )
    if native:
        return True, f"{name}={setting}: bfloat16 autocast ({cpu_model()} has {features})"
    return False, f"{name}=auto: float32 ({cpu_model()}: {features}, so bfloat16 would be slower)"
