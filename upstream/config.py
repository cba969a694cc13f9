"""Typed configuration of an upstream: the acoustic front end and the Transformer encoder.

Both dataclasses are plain data: they are stored inside every checkpoint (as dicts) so a
file always says which features its weights were trained on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from utility.typed_config import check_choice, dataclass_from_dict

FEATURE_KINDS = ("logmel", "kaldi_fbank")
TARGET_KINDS = ("linear", "mel")


@dataclass
class FrontendConfig:
    """Waveform -> frame features (10 ms frames).

    ``logmel`` is a centred 25 ms Hann STFT (n_fft = 2 * (n_freq - 1)), power spectrum, HTK mel
    filters 0 - sample_rate / 2, ``log(x + log_floor)``. ``kaldi_fbank`` calls
    ``torchaudio.compliance.kaldi.fbank`` with ``kaldi_options`` (s3prl's Kaldi-style files).
    Then ``delta_order`` deltas are appended and, with ``cmvn``, each utterance is normalised
    to zero mean and unit (unbiased) standard deviation over its real frames.
    """

    feature: str = "logmel"
    sample_rate: int = 16000
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_freq: int = 201
    n_mels: int = 80
    delta_order: int = 1
    cmvn: bool = True
    log_floor: float = 1e-10
    # s3prl scales every waveform to this RMS level (dB) before its features; None: no scaling.
    target_level_db: Optional[float] = None
    kaldi_options: dict[str, Any] = field(default_factory=dict)
    # Pretraining reconstruction target: log linear spectrogram (the papers' large models)
    # or the log-mel input itself (their base models).
    target: str = "linear"
    # Fixed per-dimension statistics of a corpus ({input_mean, input_std, target_mean,
    # target_std}, set by pretraining with data.corpus_cmvn): inputs and targets are standardised
    # with them instead of per utterance, which keeps what differs between utterances (the
    # spectral mean: speaker and channel) at the same scale. None: not used; exclusive with cmvn.
    corpus_stats: Optional[dict[str, list[float]]] = None

    def __post_init__(self) -> None:
        check_choice("frontend.feature", self.feature, FEATURE_KINDS)
        check_choice("frontend.target", self.target, TARGET_KINDS)
        if self.delta_order < 0:
            raise ValueError(f"frontend.delta_order must be >= 0, got {self.delta_order}")
        for name in ("sample_rate", "win_ms", "hop_ms", "n_mels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"frontend.{name} must be > 0, got {getattr(self, name)}")
        if self.n_freq < 2 or self.log_floor < 0:
            raise ValueError(f"frontend.n_freq must be >= 2 and log_floor >= 0, got {self.n_freq} and {self.log_floor}")
        if self.corpus_stats is not None:
            self._check_corpus_stats()

    def _check_corpus_stats(self) -> None:
        if self.cmvn:
            raise ValueError("frontend.corpus_stats replaces per-utterance CMVN: set frontend.cmvn to false with it")
        sizes = {"input_mean": self.feature_dim, "input_std": self.feature_dim}
        sizes.update({"target_mean": self.target_dim, "target_std": self.target_dim})
        stats = self.corpus_stats
        if not isinstance(stats, dict) or set(stats) != set(sizes):
            raise ValueError(f"frontend.corpus_stats must map exactly {sorted(sizes)} to lists of numbers")
        for key, size in sizes.items():
            values = stats[key]
            if not isinstance(values, list) or len(values) != size or not all(isinstance(v, (int, float)) for v in values):
                raise ValueError(f"frontend.corpus_stats.{key} must be a list of {size} numbers")
            if key.endswith("std") and min(values) <= 0:
                raise ValueError(f"frontend.corpus_stats.{key} must be > 0 everywhere")

    @property
    def hop_length(self) -> int:
        """Frame shift in samples."""
        return round(self.hop_ms * self.sample_rate / 1000)

    @property
    def win_length(self) -> int:
        """Analysis window in samples."""
        return round(self.win_ms * self.sample_rate / 1000)

    @property
    def n_fft(self) -> int:
        return 2 * (self.n_freq - 1)

    @property
    def base_dim(self) -> int:
        """Dimension of one frame before deltas."""
        if self.feature == "kaldi_fbank":
            return int(self.kaldi_options.get("num_mel_bins", 23))
        return self.n_mels

    @property
    def feature_dim(self) -> int:
        """Dimension of one frame of model input (with deltas)."""
        return self.base_dim * (1 + self.delta_order)

    @property
    def target_dim(self) -> int:
        """Dimension of one frame of the pretraining target."""
        return self.n_freq if self.target == "linear" else self.n_mels


@dataclass
class EncoderConfig:
    """The Mockingjay / AALBERT Transformer (reference: BERT-base sized layers on audio frames).

    ``share_layer`` makes it AALBERT: one layer object applied ``num_layers`` times.
    ``embedding_size`` > 0 adds ALBERT's factorised input projection
    (input_dim * R -> embedding_size -> hidden_size); 0 keeps the papers' single projection.
    ``position_scale`` multiplies the sinusoidal positions added to the projected input, and
    ``input_layer_norm`` normalises their sum per frame; 1.0 and true are s3prl's input layer.
    The LayerNorm makes only the ratio of the two terms matter: at the usual initialisation the
    positions (unit scale) are as large as the projected frame, so a probe of the input
    representation reads a frame's content beside a position signal of the same size.
    ``position_scale`` = 1 / sqrt(hidden_size) is the original Transformer's ratio (it scales
    the embedding up by sqrt(d_model) instead).
    ``max_frames`` (stacked frames, 0 = unlimited) is the longest span attended at once:
    a longer input of L frames is cut into ceil(L / max_frames) equal consecutive chunks
    (the last one shorter) encoded independently, exactly as s3prl does with its
    ``sequence_length``.
    """

    input_dim: int = 160
    downsample_rate: int = 3
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    share_layer: bool = False
    pre_layer_norm: bool = False
    embedding_size: int = 0
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    position_scale: float = 1.0
    input_layer_norm: bool = True
    max_frames: int = 500

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"encoder.hidden_size ({self.hidden_size}) must be a multiple of "
                f"encoder.num_heads ({self.num_heads})"
            )
        for name in ("input_dim", "downsample_rate", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"encoder.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"encoder.{name} is a probability in [0, 1), got {getattr(self, name)}")
        for name in ("embedding_size", "max_frames", "initializer_range", "position_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"encoder.{name} must be >= 0, got {getattr(self, name)}")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"encoder.layer_norm_eps must be > 0, got {self.layer_norm_eps}")


@dataclass
class UpstreamConfig:
    """Everything needed to rebuild an upstream from a checkpoint.

    ``family`` is ``mockingjay`` or ``aalbert`` for Transformer upstreams and ``baseline`` for
    plain features (then ``encoder`` is None). ``stack`` (baselines only) puts that many
    consecutive 10 ms frames side by side in one output frame: a Transformer's own input at its
    frame rate, without the encoder (a Transformer stacks by ``encoder.downsample_rate``).
    """

    family: str
    frontend: FrontendConfig
    encoder: Optional[EncoderConfig] = None
    stack: int = 1

    def __post_init__(self) -> None:
        if self.stack < 1:
            raise ValueError(f"stack must be >= 1, got {self.stack}")
        if self.stack != 1 and self.encoder is not None:
            raise ValueError("stack is for plain-feature baselines; a Transformer stacks by encoder.downsample_rate")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "UpstreamConfig":
        if not isinstance(data, dict) or "family" not in data or "frontend" not in data:
            raise ValueError(f"{source}: expected a dict with 'family', 'frontend' and 'encoder' keys")
        encoder = data.get("encoder")
        return cls(
            family=str(data["family"]),
            frontend=dataclass_from_dict(FrontendConfig, data["frontend"], f"{source}.frontend"),
            encoder=None if encoder is None else dataclass_from_dict(EncoderConfig, encoder, f"{source}.encoder"),
            stack=int(data.get("stack", 1)),  # configs stored before baselines could stack have none
        )
