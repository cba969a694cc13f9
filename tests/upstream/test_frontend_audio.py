"""Front end and audio input: the features match torchaudio's, and bad input is refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from upstream import FrontendConfig, read_audio
from upstream.frontend import FeatureExtractor


def test_logmel_matches_torchaudio_for_one_utterance(demo_wavs):
    wav = demo_wavs[0]
    features = FeatureExtractor(FrontendConfig(delta_order=0, cmvn=False))([wav])
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=400, win_length=400, hop_length=160, n_mels=80, mel_scale="htk", power=2.0
    )(wav)
    expected = (mel + 1e-10).log().T
    assert features.inputs.shape[1] == expected.shape[0] == wav.numel() // 160 + 1
    assert torch.allclose(features.inputs[0], expected, atol=1e-4)


def test_deltas_and_cmvn_over_real_frames_only(demo_wavs):
    extractor = FeatureExtractor(FrontendConfig())
    features = extractor(demo_wavs)
    assert features.inputs.shape[-1] == 160
    for index, length in enumerate(features.lengths.tolist()):
        real = features.inputs[index, :length]
        assert torch.allclose(real.mean(0), torch.zeros(160), atol=1e-4)
        assert torch.allclose(real.std(0), torch.ones(160), atol=1e-3)
        assert not features.inputs[index, length:].any()
    # Deltas of one item equal torchaudio's compute_deltas on that item alone.
    alone = FeatureExtractor(FrontendConfig(cmvn=False))([demo_wavs[1]]).inputs[0]
    assert torch.allclose(alone[:, 80:], torchaudio.functional.compute_deltas(alone[:, :80].T).T, atol=1e-5)


def test_targets_are_log_linear_spectrogram(demo_wavs):
    features = FeatureExtractor(FrontendConfig(cmvn=False))(demo_wavs[:2], with_target=True)
    assert features.targets.shape[:2] == features.inputs.shape[:2]
    assert features.targets.shape[-1] == 201
    power = torch.stft(demo_wavs[0], 400, 160, window=torch.hann_window(400), return_complex=True).abs().pow(2)
    assert torch.allclose(features.targets[0, : power.shape[1]], (power + 1e-10).log().T, atol=1e-3)


def test_target_level_scales_each_utterance(demo_wavs):
    extractor = FeatureExtractor(FrontendConfig(target_level_db=-25, cmvn=False))
    loud = extractor([demo_wavs[0] * 10]).inputs
    quiet = extractor([demo_wavs[0]]).inputs
    assert torch.allclose(loud, quiet, atol=1e-3)


@pytest.mark.parametrize(
    "wavs, error, message",
    [
        ([torch.zeros(0)], ValueError, "waveform 0 is empty"),
        ([torch.zeros(100)], ValueError, "shorter than one analysis window"),
        ([torch.full((1000,), float("nan"))], ValueError, "NaN or inf"),
        ([torch.tensor([0.0, float("inf")] * 500)], ValueError, "NaN or inf"),
        ([torch.zeros(2, 16000)], ValueError, r"shape \(2, 16000\); expected a 1-D mono"),
        ([torch.zeros(16000, dtype=torch.int16)], TypeError, "integer dtype"),
        (torch.zeros(2, 1, 16000), ValueError, r"padded batch of shape \(batch, samples\)"),  # (batch, samples) is accepted
        ([], ValueError, "empty list"),
        ([np.zeros(16000)], TypeError, "expected a torch.Tensor"),
    ],
    ids=["empty", "short", "nan", "inf", "2d", "int", "tensor", "nolist", "numpy"],
)
def test_bad_waveforms_are_refused_with_the_fix(tiny_upstream, wavs, error, message):
    with pytest.raises(error, match=message):
        tiny_upstream(wavs)


def test_read_audio_resamples_and_refuses_stereo(tmp_path):
    tone = np.sin(np.linspace(0, 2000, 8000)).astype("float32")
    soundfile.write(tmp_path / "8k.wav", tone, 8000)
    assert read_audio(tmp_path / "8k.wav").shape == (16000,)
    soundfile.write(tmp_path / "stereo.flac", np.stack([tone, -tone], 1), 16000)
    with pytest.raises(ValueError, match="2 channels.*mix_channels=True"):
        read_audio(tmp_path / "stereo.flac")
    mixed = read_audio(tmp_path / "stereo.flac", mix_channels=True)
    assert mixed.abs().max() < 1e-4  # the two channels cancel (up to 16-bit rounding)
    with pytest.raises(FileNotFoundError, match="audio file not found"):
        read_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match="cannot read audio file"):
        read_audio(tmp_path / "junk.wav")
