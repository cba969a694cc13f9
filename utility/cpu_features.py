"""What this CPU can do fast: its model name, the instruction-set features that decide bf16 and
float32 speed, and whether bfloat16 arithmetic is native here.

Native bfloat16 means AVX512-BF16 or AMX on x86 (Intel Cooper Lake / Sapphire Rapids and later,
AMD Zen 4 and later), BF16 on ARM. Elsewhere oneDNN emulates bfloat16 with float32
instructions, which is slower than float32 itself (extraction 3-4x with an AVX2-only CPU's
code paths in this project's measurements, about 6x reported on an AVX2-only AMD EPYC).
``torch.backends.cpu.get_cpu_capability()`` does not tell these apart ("AVX512" covers CPUs
with and without AVX512-BF16), and neither does oneDNN's own check, which accepts any AVX512
CPU; so the kernel's feature flags decide, and a limit the user put on oneDNN
(``ONEDNN_MAX_CPU_ISA=AVX2``, also how an AVX2-only machine's code paths are reproduced on a
newer CPU) is respected.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

from .typed_config import check_choice

CPUINFO = Path("/proc/cpuinfo")
# Features printed beside speed numbers: float32 vector width, then native bf16 / matrix units.
REPORTED_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16")
NATIVE_BF16_FEATURES = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # bf16: ARM's name
ONEDNN_ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")  # DNNL_: the older name, read if the first is unset
# oneDNN's instruction-set limits below bf16 dot products (its docs, "CPU dispatcher control").
ONEDNN_ISAS_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_MIC", "AVX512_MIC_4OPS"}
)


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


def onednn_isa_limit() -> tuple[str, str] | None:
    """The instruction-set limit the user set for oneDNN: (variable, value upper-cased), or None."""
    for name in ONEDNN_ISA_LIMITS:
        if os.environ.get(name):
            return name, os.environ[name].strip().upper()
    return None


def onednn_bf16_barred() -> str | None:
    """``VARIABLE=VALUE`` when that limit keeps oneDNN below its bf16 instructions, else None."""
    limit = onednn_isa_limit()
    return f"{limit[0]}={limit[1]}" if limit and limit[1] in ONEDNN_ISAS_WITHOUT_BF16 else None


def native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively and oneDNN is there, allowed, to use it."""
    if not torch.backends.mkldnn.is_available() or onednn_bf16_barred():
        return False
    return bool(cpu_flags() & NATIVE_BF16_FEATURES)


def emulated_bf16_note() -> str:
    """Why bfloat16 is slow on this CPU (for warnings where it runs without native support)."""
    return (
        f"this CPU ({cpu_model()}) has no native bfloat16 (AVX512-BF16, AMX or BF16), so bfloat16 is emulated "
        "and slower than float32 (extraction 3-6x on AVX2-only CPUs); float32 is faster here"
    )


def cpu_report() -> dict[str, object]:
    """The CPU model, its reported features, and torch's view of it: for benchmark output."""
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "features": [name for name in REPORTED_FEATURES if name in flags],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_isa_limit": (onednn_isa_limit() or (None, None))[1],
        "native_bf16": native_bf16(),
    }


def usable_cores() -> int:
    """Cores this process may run on (its affinity; all of the machine's where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_line() -> str:
    """:func:`cpu_report` as one line, for the head of a benchmark's table."""
    report = cpu_report()
    features = " ".join(report["features"]) or f"none of {', '.join(REPORTED_FEATURES)}"
    limit = f", oneDNN limited to {report['onednn_isa_limit']}" if report["onednn_isa_limit"] else ""
    return (
        f"CPU: {report['cpu']}, {usable_cores()} usable cores; features: {features}; "
        f"torch kernels: {report['torch_cpu_capability']}{limit}; native bfloat16: {'yes' if report['native_bf16'] else 'no'}"
    )


CPU_BF16_CHOICES = ("auto", "on", "off")


def cpu_bf16_choice(setting: str, name: str = "runner.cpu_bf16") -> tuple[bool, str]:
    """Whether to run CPU autocast in bfloat16 for ``setting`` (auto / on / off; YAML's true and
    false arrive as on / off), and the reason, for the log.

    ``auto`` takes bfloat16 exactly where it is native (:func:`native_bf16`); ``on`` insists and
    is refused where it is not, because emulated bfloat16 is slower than float32."""
    check_choice(name, setting, CPU_BF16_CHOICES)
    native = native_bf16()
    features = ", ".join(sorted(cpu_flags() & NATIVE_BF16_FEATURES)) or "no AVX512-BF16, AMX or BF16"
    if barred := onednn_bf16_barred():
        features += f" but {barred}"
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
