"""Acoustic front end: a batch of waveforms -> padded frame features with explicit lengths.

Every step is computed on the padded batch but only ever reads an item's own samples and
frames, so an utterance gets the same features alone or in any batch:
- the STFT edge padding is a per-item reflection (what ``center=True`` does for one item),
- deltas replicate each item's own last frame (what ``compute_deltas`` does for one item),
- CMVN statistics are taken over real frames only, and padded frames are zeroed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF
from torch import nn

from .config import FrontendConfig


@dataclass
class Features:
    """Front-end output. ``inputs``: (batch, frames, feature_dim); ``lengths``: (batch,) real
    frame counts; ``targets``: (batch, frames, target_dim) or None."""

    inputs: torch.Tensor
    lengths: torch.Tensor
    targets: Optional[torch.Tensor] = None


def frame_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(batch,) lengths -> (batch, max_len) bool, True on real frames."""
    return torch.arange(max_len, device=lengths.device) < lengths[:, None]


class FeatureExtractor(nn.Module):
    """Computes model inputs (and optionally pretraining targets) from waveforms."""

    def __init__(self, config: FrontendConfig):
        super().__init__()
        self.config = config
        # Buffers follow the module across devices; they are not part of the state dict.
        self.register_buffer("window", torch.hann_window(config.win_length), persistent=False)
        mel_filters = AF.melscale_fbanks(
            n_freqs=config.n_freq,
            f_min=0.0,
            f_max=config.sample_rate / 2,
            n_mels=config.n_mels,
            sample_rate=config.sample_rate,
            mel_scale="htk",
        )
        self.register_buffer("mel_filters", mel_filters, persistent=False)  # (n_freq, n_mels)
        stats = config.corpus_stats or {}
        for name, values in stats.items():  # (dim,) each: corpus statistics, see FrontendConfig
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32), persistent=False)

    def min_samples(self, frames: int = 1) -> int:
        """Shortest waveform that is at least one analysis window long and gives ``frames`` frames."""
        hop, window = self.config.hop_length, self.config.win_length
        if self.config.feature == "kaldi_fbank" and self.config.kaldi_options.get("snip_edges", True):
            return window + (frames - 1) * hop
        return max(window, (frames - 1) * hop)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frame count for each waveform length (centred STFT, or Kaldi's snip_edges)."""
        hop = self.config.hop_length
        if self.config.feature == "kaldi_fbank" and self.config.kaldi_options.get("snip_edges", True):
            return 1 + (num_samples - self.config.win_length) // hop
        return num_samples // hop + 1

    def forward(self, wavs: Sequence[torch.Tensor], with_target: bool = False) -> Features:
        """wavs: list of (samples,) float tensors at ``config.sample_rate``."""
        cfg = self.config
        device = self.window.device
        wavs = [wav.to(device=device, dtype=torch.float32) for wav in wavs]
        if cfg.target_level_db is not None:
            # One gain per utterance, from its RMS (s3prl's recipe).
            gain = 10 ** (cfg.target_level_db / 20)
            wavs = [wav * (gain / (wav.pow(2).mean().sqrt() + 1e-10)) for wav in wavs]
        lengths = self.num_frames(torch.tensor([wav.numel() for wav in wavs], device=device))

        power = None
        if cfg.feature == "kaldi_fbank":
            base = nn.utils.rnn.pad_sequence(
                [kaldi.fbank(wav[None], sample_frequency=cfg.sample_rate, **cfg.kaldi_options) for wav in wavs],
                batch_first=True,
            ).transpose(1, 2)  # (batch, bins, frames)
        else:
            power = self._power_spectrogram(wavs)  # (batch, n_freq, frames)
            base = self._log(torch.matmul(power.transpose(1, 2), self.mel_filters).transpose(1, 2))

        inputs = self._finish(base, lengths, cfg.delta_order, "input")
        targets = None
        if with_target:
            if power is None:
                raise ValueError("pretraining targets need frontend.feature='logmel'")
            target_base = self._log(power) if cfg.target == "linear" else base
            targets = self._finish(target_base, lengths, 0, "target")
        return Features(inputs=inputs, lengths=lengths, targets=targets)

    def _power_spectrogram(self, wavs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Centred STFT power of each item, padded to the longest: (batch, n_freq, frames)."""
        cfg = self.config
        edge = cfg.n_fft // 2
        padded = [F.pad(wav[None, None], (edge, edge), mode="reflect")[0, 0] for wav in wavs]
        batch = nn.utils.rnn.pad_sequence(padded, batch_first=True)
        spec = torch.stft(
            batch,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length,
            window=self.window,
            center=False,
            return_complex=True,
        )
        return spec.abs().pow(2)

    def _log(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.config.log_floor).log()

    def _finish(self, base: torch.Tensor, lengths: torch.Tensor, delta_order: int, kind: str) -> torch.Tensor:
        """(batch, dim, frames) -> deltas, CMVN (per utterance, or with the corpus statistics of
        ``kind``: input or target), zeroed padding -> (batch, frames, dim')."""
        num_frames = base.shape[-1]
        # Repeat each item's last real frame over its padding so deltas see the same edge as alone.
        last = (lengths - 1).clamp(min=0)
        index = torch.minimum(torch.arange(num_frames, device=base.device)[None, :], last[:, None])
        index = index[:, None, :].expand(-1, base.shape[1], -1)
        feats = [base]
        for _ in range(delta_order):
            feats.append(AF.compute_deltas(feats[-1].gather(2, index)))
        x = torch.cat(feats, dim=1)
        mask = frame_mask(lengths, num_frames)[:, None, :]  # (batch, 1, frames)
        if self.config.cmvn:
            count = lengths[:, None, None].to(x.dtype)
            mean = (x * mask).sum(-1, keepdim=True) / count
            # Unbiased standard deviation, as torch.std (and s3prl) computes it.
            var = ((x - mean).pow(2) * mask).sum(-1, keepdim=True) / (count - 1).clamp(min=1)
            x = (x - mean) / (var.sqrt() + self.config.log_floor)
        elif self.config.corpus_stats is not None:
            mean, std = getattr(self, f"{kind}_mean"), getattr(self, f"{kind}_std")
            x = (x - mean[None, :, None]) / std[None, :, None]
        return (x * mask).transpose(1, 2).contiguous()
