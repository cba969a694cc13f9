"""The two ways to hand waveforms to an upstream, reduced to one.

- a list of 1-D tensors (s3prl's convention), each its own length;
- a padded ``(batch, samples)`` tensor plus a ``(batch,)`` tensor of valid lengths
  (torchaudio's and HuggingFace's convention); without lengths every row is taken whole.

Either way the model sees the same list, so both calls give exactly the same outputs.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

Waveforms = Union[Sequence[torch.Tensor], torch.Tensor]


def waveform_list(
    wavs: Waveforms,
    wav_lengths: Optional[torch.Tensor] = None,
    sample_rate: Optional[int] = None,
    expected_rate: int = 16000,
) -> Sequence[torch.Tensor]:
    """A list of 1-D waveforms from either calling convention.

    Args:
        wavs: list of (samples,) tensors, or a (batch, samples) padded tensor.
        wav_lengths: (batch,) integer valid lengths of a padded tensor (None: whole rows).
        sample_rate: the rate of ``wavs`` if the caller states it; anything but
            ``expected_rate`` is refused (resample first).
        expected_rate: the rate the model was trained on.
    """
    if sample_rate is not None and int(sample_rate) != expected_rate:
        raise ValueError(
            f"this model expects {expected_rate} Hz audio, got sample_rate={sample_rate}; resample first, "
            f"e.g. torchaudio.functional.resample(wav, {sample_rate}, {expected_rate})"
        )
    if not isinstance(wavs, torch.Tensor):
        if wav_lengths is not None:
            raise ValueError(
                "wav_lengths goes with a padded (batch, samples) tensor; a list of waveforms carries its own lengths"
            )
        return wavs
    if wavs.dim() != 2:
        raise ValueError(
            f"a waveform tensor must be a padded batch of shape (batch, samples), got shape {tuple(wavs.shape)}; "
            "for one waveform pass wav[None] or [wav]"
        )
    if wav_lengths is None:
        return list(wavs)
    lengths = torch.as_tensor(wav_lengths)
    if lengths.shape != (wavs.shape[0],) or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise ValueError(
            f"wav_lengths must be an integer tensor of shape ({wavs.shape[0]},), one length per row; "
            f"got {lengths.dtype} of shape {tuple(lengths.shape)}"
        )
    if bool((lengths < 0).any()) or bool((lengths > wavs.shape[1]).any()):
        raise ValueError(f"wav_lengths must lie in [0, {wavs.shape[1]}] (the padded length), got {lengths.tolist()}")
    return [wav[:length] for wav, length in zip(wavs, lengths.tolist())]
