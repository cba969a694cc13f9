"""Plain-feature baselines: mel without CMVN, and a Transformer's own input at its frame rate."""

from __future__ import annotations

import pytest
import torch

import hub
from conftest import tiny_config
from upstream import Upstream, UpstreamConfig, save_upstream


def test_mel_raw_is_mel_without_per_utterance_normalisation(demo_wavs):
    with torch.inference_mode():
        raw = hub.mel_raw()(demo_wavs[:2])
        normalised = hub.mel()(demo_wavs[:2])
    first = raw["hidden_states"][0][0, : int(raw["lengths"][0])]
    assert raw["hidden_states"][0].shape == normalised["hidden_states"][0].shape
    # Per-utterance CMVN makes each utterance's mean frame zero; without it the mean is kept.
    assert normalised["hidden_states"][0][0, : int(normalised["lengths"][0])].mean(0).abs().max() < 1e-4
    assert first[:, :80].mean(0).abs().max() > 1.0
    standardised = (first - first.mean(0)) / (first.std(0) + 1e-10)
    assert torch.allclose(standardised, normalised["hidden_states"][0][0, : int(raw["lengths"][0])], atol=1e-3)


def test_model_input_is_the_checkpoints_front_end_stacked_to_its_frame_rate(tmp_path, demo_wavs):
    torch.manual_seed(0)
    transformer = Upstream(tiny_config(downsample_rate=3)).eval()
    path = save_upstream(transformer, tmp_path / "tiny.ckpt", name="aalbert_3L")
    model_input = hub.model_input(str(path))
    assert model_input.config.encoder is None and model_input.config.stack == 3
    assert model_input.downsample_rate == transformer.downsample_rate == 480
    assert model_input.first_frame_centre == transformer.first_frame_centre
    with torch.inference_mode():
        states = model_input(demo_wavs[:2])
        encoded = transformer(demo_wavs[:2])
        features = transformer.frontend(demo_wavs[:2])
    assert len(states["hidden_states"]) == 1 and model_input.hidden_size == 160 * 3
    assert torch.equal(states["lengths"], encoded["lengths"])
    frames = int(states["lengths"][0])
    # Output frame t is raw frames 3t, 3t + 1, 3t + 2 side by side: what the encoder is given.
    expected = features.inputs[0, : 3 * frames].reshape(frames, 480)
    assert torch.equal(states["hidden_states"][0][0, :frames], expected)
    # Without a checkpoint: the presets' input, 160 dims x 3.
    assert hub.model_input().hidden_size == 480


def test_stack_is_for_baselines_only():
    with pytest.raises(ValueError, match="stack is for plain-feature baselines"):
        UpstreamConfig(family="aalbert", frontend=tiny_config().frontend, encoder=tiny_config().encoder, stack=3)
    with pytest.raises(ValueError, match="stack must be >= 1"):
        UpstreamConfig(family="baseline", frontend=tiny_config().frontend, stack=0)
    # Configurations stored before baselines could stack read back with stack 1.
    stored = UpstreamConfig(family="baseline", frontend=tiny_config().frontend).to_dict()
    del stored["stack"]
    assert UpstreamConfig.from_dict(stored).stack == 1
