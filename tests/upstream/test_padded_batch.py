"""The padded-batch call ``model(wavs, wav_lengths)`` (torchaudio's and HuggingFace's
convention) gives exactly what the list call gives, and the interface properties describe the
outputs."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from conftest import tiny_config
from upstream import Upstream, build_upstream
from upstream.model import INTERFACE


def padded(wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_sequence(wavs, batch_first=True), torch.tensor([wav.numel() for wav in wavs])


@pytest.fixture(params=["aalbert", "mockingjay_chunked", "fbank"])
def model(request) -> Upstream:
    torch.manual_seed(0)
    if request.param == "fbank":
        return build_upstream("fbank")
    family = request.param.split("_")[0]
    return Upstream(tiny_config(family, max_frames=20 if "chunked" in request.param else 500)).eval()


def test_padded_batch_equals_the_list_call_for_every_hidden_state(model, demo_wavs):
    wavs, lengths = padded(demo_wavs)
    with torch.inference_mode():
        listed = model(demo_wavs)
        batched = model(wavs, lengths)
        stated = model(wavs, lengths, sample_rate=16000)
    assert torch.equal(listed["lengths"], batched["lengths"])
    assert len(batched["hidden_states"]) == model.num_hidden_states == len(model.hidden_sizes)
    for a, b, c, size in zip(listed["hidden_states"], batched["hidden_states"], stated["hidden_states"], model.hidden_sizes):
        assert (a - b).abs().max() <= 1e-6 and torch.equal(b, c)
        assert a.shape[-1] == size
    assert batched["last_hidden_state"] is batched["hidden_states"][-1]


def test_interface_describes_the_outputs(model, demo_wavs):
    assert all(hasattr(model, name) for name in INTERFACE)
    assert model.sample_rate == 16000
    with torch.inference_mode():
        out = model(demo_wavs)
    expected = model.num_frames(torch.tensor([wav.numel() for wav in demo_wavs]))
    assert torch.equal(out["lengths"], expected)
    # Frames are downsample_rate samples apart: the longest item spans its length in frames,
    # give or take the first analysis window.
    longest = max(wav.numel() for wav in demo_wavs)
    assert abs(int(expected.max()) - longest / model.downsample_rate) <= model.min_samples / model.downsample_rate + 1


def test_a_padded_batch_without_lengths_is_taken_whole(demo_wavs):
    model = build_upstream("fbank")
    wavs = torch.stack([wav[:16000] for wav in demo_wavs])
    with torch.inference_mode():
        assert torch.equal(model(wavs)["hidden_states"][0], model(list(wavs))["hidden_states"][0])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, w: m(w, sample_rate=8000), "expects 16000 Hz audio, got sample_rate=8000; resample first"),
        (lambda m, w: m(w, torch.tensor([16000])), r"integer tensor of shape \(2,\)"),
        (lambda m, w: m(w, torch.tensor([16000.0, 100.0])), "integer tensor"),
        (lambda m, w: m(w, torch.tensor([16001, 100])), r"must lie in \[0, 16000\]"),
        (lambda m, w: m(list(w), torch.tensor([16000, 100])), "a list of waveforms carries its own lengths"),
        (
            lambda m, w: m(w[0]),
            r"padded batch of shape \(batch, samples\), got shape \(16000,\); for one waveform pass wav\[None\]",
        ),
        (lambda m, w: m(w[None]), r"got shape \(1, 2, 16000\)"),
        (lambda m, w: m(w, torch.tensor([16000, 0])), "waveform 1 is empty"),
    ],
)
def test_padded_batch_mistakes_are_refused_clearly(call, message):
    model = build_upstream("fbank")
    wavs = torch.randn(2, 16000)
    with pytest.raises(ValueError, match=message):
        call(model, wavs)
