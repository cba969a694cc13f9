"""Typed configuration of an upstream: the acoustic front end and the Transformer encoder.

Both dataclasses are plain data: they are stored inside every checkpoint (as dicts) so a
file always says which features its weights were trained on.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Collection, Optional, TypeVar

FEATURE_KINDS = ("logmel", "kaldi_fbank")
# Field metadata of a float setting that may be infinite (say, "no limit"): ``field(default=...,
# metadata={ALLOWS_INFINITY: True})``. NaN is never a setting.
ALLOWS_INFINITY = "allows_infinity"
TARGET_KINDS = ("linear", "mel")

T = TypeVar("T")


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
        for name in ("embedding_size", "max_frames", "initializer_range"):
            if getattr(self, name) < 0:
                raise ValueError(f"encoder.{name} must be >= 0, got {getattr(self, name)}")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"encoder.layer_norm_eps must be > 0, got {self.layer_norm_eps}")


@dataclass
class UpstreamConfig:
    """Everything needed to rebuild an upstream from a checkpoint.

    ``family`` is ``mockingjay`` or ``aalbert`` for Transformer upstreams and ``baseline`` for
    plain features (then ``encoder`` is None).
    """

    family: str
    frontend: FrontendConfig
    encoder: Optional[EncoderConfig] = None

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
        )


def check_choice(name: str, value: Any, choices: Collection[Any]) -> None:
    """Refuse a setting that is not one of ``choices``, naming the setting and the choices."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def dataclass_from_dict(cls: type[T], data: dict[str, Any], source: str) -> T:
    """Build a config dataclass from a dict: unknown keys and values of the wrong type raise,
    naming the key. Missing keys take the dataclass defaults.

    Numbers are read once, here: an int is accepted for a float field, and so is a numeric
    string, because YAML 1.1 reads ``2e-4`` (no dot) as text. For the same reason a boolean
    given to a text field is read back as the word YAML took it for (``off`` -> "off").
    Every float (also in a list) must be finite: NaN compares false with every bound, so a
    range check in ``__post_init__`` alone would let it through. A field whose metadata has
    ``ALLOWS_INFINITY`` may be infinite.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; known keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        values[key] = _typed(hints[key], value, f"{source}.{key}")
        _check_finite(values[key], f"{source}.{key}", fields[key].metadata.get(ALLOWS_INFINITY, False))
    return cls(**values)


def _check_finite(value: Any, name: str, allows_infinity: bool) -> None:
    """Refuse a NaN (or, unless allowed, infinite) float, alone or in a list."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, float) and (math.isnan(item) or (math.isinf(item) and not allows_infinity)):
            raise ValueError(f"{name} must be a finite number, got {item}")


class SettingTypeError(TypeError, ValueError):
    """A setting of the wrong type: a mistake in the user's configuration (hence also a ValueError)."""


def _typed(hint: Any, value: Any, name: str) -> Any:
    """``value`` checked against the annotation ``hint`` (numbers converted to float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        if value is None:
            return None
        if len(options) != 1:
            return value  # a real union: left to the dataclass's own checks
        hint, origin = options[0], typing.get_origin(options[0])
    expected = origin or hint
    if expected is str and isinstance(value, bool):
        return "on" if value else "off"
    if expected is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise SettingTypeError(f"{name} must be a number, got {value!r}")
    if expected in (int, bool, str, list, dict) and (
        not isinstance(value, expected) or (expected is int and isinstance(value, bool))
    ):
        raise SettingTypeError(f"{name} must be {expected.__name__}, got {value!r}")
    return value
