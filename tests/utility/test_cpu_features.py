"""CPU feature detection: native bfloat16 from the kernel's flags, and a limit the user put on
oneDNN (ONEDNN_MAX_CPU_ISA) respected, so a machine made to run AVX2 code paths picks float32."""

from __future__ import annotations

import pytest
import torch

from utility import cpu_features

BF16_CPU = frozenset({"avx2", "avx512f", "avx512_bf16"})


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: BF16_CPU)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN")
    return monkeypatch


def test_native_bf16_follows_the_flags(bf16_cpu):
    assert cpu_features.native_bf16()
    bf16_cpu.setattr(cpu_features, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert not cpu_features.native_bf16()


@pytest.mark.parametrize("name", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
@pytest.mark.parametrize("limit, native", [("avx2", False), ("AVX512_CORE", False), ("AVX512_CORE_BF16", True), ("ALL", True)])
def test_a_onednn_limit_below_bf16_turns_native_bf16_off(bf16_cpu, name, limit, native):
    bf16_cpu.setenv(name, limit)
    assert cpu_features.native_bf16() is native
    chosen, reason = cpu_features.cpu_bf16_choice("auto")
    assert chosen is native
    if not native:
        assert reason.startswith("runner.cpu_bf16=auto: float32") and f"{name}={limit.upper()}" in reason
        with pytest.raises(ValueError, match="no native bfloat16"):
            cpu_features.cpu_bf16_choice("on")


def test_the_report_names_the_limit(bf16_cpu):
    bf16_cpu.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    report = cpu_features.cpu_report()
    assert report["onednn_isa_limit"] == "AVX2" and report["native_bf16"] is False
    assert report["features"] == ["avx2", "avx512f", "avx512_bf16"]


def test_the_benchmark_line_names_the_cpu_and_what_decides_its_speed(bf16_cpu):
    line = cpu_features.cpu_line()
    assert line.startswith("CPU: ") and "features: avx2 avx512f avx512_bf16" in line and line.endswith("native bfloat16: yes")
    bf16_cpu.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    bf16_cpu.setattr(cpu_features, "cpu_flags", lambda: frozenset({"sse2"}))
    line = cpu_features.cpu_line()
    assert "features: none of avx2" in line and "oneDNN limited to AVX2" in line and line.endswith("native bfloat16: no")
