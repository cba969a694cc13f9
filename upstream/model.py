"""The upstream contract: a list of 16 kHz waveforms in, hidden states of every layer out."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .audio import check_waveforms
from .config import UpstreamConfig
from .encoder import TransformerEncoder, stack_frames
from .frontend import FeatureExtractor
from .inputs import Waveforms, waveform_list


# What code outside upstream/ may use besides ``forward``: wrappers (caches) forward these.
INTERFACE = (
    "device", "sample_rate", "downsample_rate", "hidden_size", "hidden_sizes", "num_hidden_states",
    "min_samples", "num_frames", "first_frame_centre", "encoder",
)


class Upstream(nn.Module):
    """Feature extractor for probing and fine-tuning.

    ``forward(wavs)`` takes a list of 1-D float tensors (16 kHz, mono, any lengths), or
    ``forward(wavs, wav_lengths)`` a padded (batch, samples) tensor and its (batch,) valid
    lengths (exactly the same outputs), and returns a dict with:

    - ``hidden_states``: tuple of N + 1 tensors (batch, frames, hidden): the input
      representation, then the output of each layer. For plain-feature baselines, one tensor:
      the features themselves.
    - ``last_hidden_state``: ``hidden_states[-1]``.
    - ``lengths``: (batch,) number of real frames of each item; frames past it are zero.

    Each item gets the same values alone as in any batch (padding never leaks). Frames are
    ``downsample_rate`` samples apart. Inputs longer than ``config.encoder.max_frames`` stacked
    frames are encoded in independent consecutive chunks of at most that length (s3prl's
    layout: ceil(L / max_frames) equal chunks), so hours of audio extract in memory linear in
    their length.

    Run it under ``torch.inference_mode()`` unless you fine-tune it. For bfloat16 inference,
    cast the encoder: ``model.encoder.to(torch.bfloat16)`` (outputs stay float32).
    """

    def __init__(self, config: UpstreamConfig):
        super().__init__()
        self.config = config
        self.frontend = FeatureExtractor(config.frontend)
        self.encoder = TransformerEncoder(config.encoder) if config.encoder is not None else None

    # The interface that downstream, analysis and caches rely on; nothing outside upstream/
    # reads the front end's or the encoder's internals.

    @property
    def device(self) -> torch.device:
        """Where the model's weights and buffers live (inputs may come from any device)."""
        return self.frontend.window.device

    @property
    def sample_rate(self) -> int:
        """Samples per second of the waveforms ``forward`` expects."""
        return self.config.frontend.sample_rate

    @property
    def frames_per_step(self) -> int:
        """Raw 10 ms frames per output frame (the encoder's R; a baseline's ``stack``)."""
        return self.config.encoder.downsample_rate if self.encoder is not None else self.config.stack

    @property
    def downsample_rate(self) -> int:
        """Samples between consecutive output frames (160 * R at 16 kHz)."""
        return self.config.frontend.hop_length * self.frames_per_step

    @property
    def hidden_size(self) -> int:
        """Width of every hidden state."""
        if self.encoder is not None:
            return self.config.encoder.hidden_size
        return self.config.frontend.feature_dim * self.config.stack

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """Width of each hidden state, in order (one per hidden state)."""
        return (self.hidden_size,) * self.num_hidden_states

    @property
    def num_hidden_states(self) -> int:
        """N + 1 for an N-layer encoder, 1 for a baseline."""
        return self.config.encoder.num_layers + 1 if self.encoder is not None else 1

    @property
    def min_samples(self) -> int:
        """Shortest waveform that yields one output frame."""
        return self.frontend.min_samples(self.frames_per_step)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """(N,) waveform lengths in samples -> (N,) output frame counts."""
        raw = self.frontend.num_frames(torch.as_tensor(num_samples, dtype=torch.long))
        return torch.div(raw, self.frames_per_step, rounding_mode="floor")

    @property
    def first_frame_centre(self) -> float:
        """Sample position of output frame 0's centre (later frames follow every ``downsample_rate``)."""
        frontend = self.config.frontend
        snip_edges = frontend.feature == "kaldi_fbank" and frontend.kaldi_options.get("snip_edges", True)
        # Raw frame 0 is centred on sample 0 (centred STFT) or on the middle of the first window.
        raw_first_centre = frontend.win_length / 2 if snip_edges else 0.0
        # A stacked frame is R raw frames side by side: its centre is their mean centre.
        return raw_first_centre + frontend.hop_length * (self.frames_per_step - 1) / 2

    def forward(
        self, wavs: Waveforms, wav_lengths: Optional[torch.Tensor] = None, *, sample_rate: Optional[int] = None
    ) -> dict[str, object]:
        """``sample_rate``, if given, must be ``self.sample_rate`` (checked, never resampled)."""
        wavs = waveform_list(wavs, wav_lengths, sample_rate, self.sample_rate)
        check_waveforms(wavs, self.min_samples)
        features = self.frontend(wavs)
        if self.encoder is None:
            stacked, lengths = stack_frames(features.inputs, features.lengths, self.config.stack)
            states = [stacked]
        else:
            dtype = self.encoder.input_projection.weight.dtype
            states, lengths = self.encoder(features.inputs.to(dtype), features.lengths)
            states = [state.float() for state in states]
        return {"hidden_states": tuple(states), "last_hidden_state": states[-1], "lengths": lengths}
