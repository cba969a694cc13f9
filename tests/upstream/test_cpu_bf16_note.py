"""precision='bfloat16' on a CPU without native bfloat16 runs (outputs as in float32, within
bfloat16's rounding) and warns why it is slow there; where bfloat16 is native it says nothing."""

from __future__ import annotations

import warnings

import pytest
import torch

from upstream import build_upstream
from utility import cpu_features


@pytest.mark.skipif(torch.cuda.is_available(), reason="the note is for CPU-only machines")
@pytest.mark.parametrize("native", [False, True])
def test_bf16_without_native_support_runs_and_says_why_it_is_slow(monkeypatch, native, demo_wavs):
    monkeypatch.setattr(cpu_features, "native_bf16", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_upstream("aalbert_3L", precision="bfloat16", pretrained=False)
    notes = [str(w.message) for w in caught if "no native bfloat16" in str(w.message)]
    assert len(notes) == (0 if native else 1)
    if not native:
        assert "slower than float32" in notes[0] and "float32 is faster here" in notes[0]
    with torch.inference_mode():
        out = model(demo_wavs[:1])
    assert out["last_hidden_state"].dtype == torch.float32 and torch.isfinite(out["last_hidden_state"]).all()
