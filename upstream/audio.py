"""Reading audio files and checking waveforms before they reach a model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

SAMPLE_RATE = 16000


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, mix_channels: bool = False) -> torch.Tensor:
    """Read a wav/flac file as a mono float32 waveform at ``sample_rate``.

    Multi-channel files are refused unless ``mix_channels`` is set, in which case the channels
    are averaged: silently dropping or mixing channels changes what a model hears.
    Other sample rates are resampled with ``torchaudio.functional.resample``.

    Returns:
        (samples,) float32 tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise ValueError(f"cannot read audio file {path}: {error}. Is it a valid wav/flac file?") from error
    channels = data.shape[1]
    if channels > 1 and not mix_channels:
        raise ValueError(
            f"{path} has {channels} channels; models expect mono. "
            "Convert it to mono, or pass mix_channels=True to average the channels."
        )
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if rate != sample_rate:
        wav = AF.resample(wav, rate, sample_rate)
    return wav


def check_waveforms(wavs: Sequence[torch.Tensor], min_samples: int, names: Optional[Sequence[str]] = None) -> None:
    """Raise a clear error for anything that is not a list of usable 1-D float waveforms.

    Args:
        wavs: list of (samples,) float tensors at 16 kHz.
        min_samples: the shortest waveform that yields one frame (one analysis window).
        names: what each waveform is called in messages (e.g. its file); default "waveform i".
    """
    if isinstance(wavs, torch.Tensor) or not isinstance(wavs, (list, tuple)):
        raise TypeError(
            f"expected a list of 1-D waveform tensors, got {type(wavs).__name__}; "
            "a model takes a padded (batch, samples) tensor as model(wavs, wav_lengths)"
        )
    if len(wavs) == 0:
        raise ValueError("expected at least one waveform, got an empty list")
    for index, wav in enumerate(wavs):
        name = names[index] if names is not None else f"waveform {index}"
        if not isinstance(wav, torch.Tensor):
            raise TypeError(f"{name} is a {type(wav).__name__}; expected a torch.Tensor")
        if wav.is_complex():
            raise TypeError(f"{name} has complex dtype {wav.dtype}; expected real float samples in [-1, 1]")
        if not wav.is_floating_point():
            raise TypeError(
                f"{name} has integer dtype {wav.dtype}; expected float samples in [-1, 1] "
                "(divide int16 audio by 32768)"
            )
        if wav.dim() != 1:
            raise ValueError(
                f"{name} has shape {tuple(wav.shape)}; expected a 1-D mono waveform. "
                "Mix or pick a channel first (e.g. wav.mean(0))"
            )
        if wav.numel() == 0:
            raise ValueError(f"{name} is empty; expected at least {min_samples} samples")
        if wav.numel() < min_samples:
            raise ValueError(
                f"{name} has {wav.numel()} samples, shorter than one analysis window "
                f"({min_samples} samples at 16 kHz); pad or drop it"
            )
        if not torch.isfinite(wav).all():
            raise ValueError(f"{name} contains NaN or inf samples; clean the audio first")
