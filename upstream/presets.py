"""The named upstreams: the papers' Mockingjay and AALBERT sizes, plain-feature baselines, and
torchaudio's wav2vec 2.0 / HuBERT / WavLM Base models for comparison."""

from __future__ import annotations

from .config import EncoderConfig, FrontendConfig, UpstreamConfig
from .files import read_upstream_checkpoint
from .model import Upstream
from .registry import UpstreamEntry, register
from .torchaudio_ssl import TORCHAUDIO_MODELS, build_torchaudio_upstream

# The papers' input: 80 log-mel + first-order delta (160 dims), per-utterance CMVN;
# the pretraining target is the log linear spectrogram.
PAPER_FRONTEND = dict(feature="logmel", n_mels=80, delta_order=1, cmvn=True, target="linear")


def transformer_preset(family: str, num_layers: int) -> UpstreamConfig:
    """BERT-base sized layers on 3 stacked frames of the papers' 160-dim features."""
    aalbert = family == "aalbert"
    # AALBERT's authors train without dropout; Mockingjay uses 0.1.
    dropout = 0.0 if aalbert else 0.1
    return UpstreamConfig(
        family=family,
        frontend=FrontendConfig(**PAPER_FRONTEND),
        encoder=EncoderConfig(
            input_dim=160,
            downsample_rate=3,
            hidden_size=768,
            num_layers=num_layers,
            num_heads=12,
            intermediate_size=3072,
            share_layer=aalbert,
            hidden_dropout=dropout,
            attention_dropout=dropout,
        ),
    )


def fbank_preset() -> UpstreamConfig:
    """Kaldi fbank, 80 bins + delta + delta-delta (240 dims), no CMVN.

    Without CMVN: per-utterance normalisation strips much of the speaker information that
    plain features carry."""
    return UpstreamConfig(
        family="baseline",
        frontend=FrontendConfig(
            feature="kaldi_fbank",
            kaldi_options={"num_mel_bins": 80, "frame_length": 25.0, "frame_shift": 10.0, "dither": 0.0},
            delta_order=2,
            cmvn=False,
        ),
    )


def mel_preset() -> UpstreamConfig:
    """Exactly the Transformer models' input: 80 log-mel + delta, per-utterance CMVN.

    Per-utterance CMVN makes every utterance's mean frame zero, so a probe that pools over
    time (speaker_utterance) sees nothing: use mel_raw there."""
    return UpstreamConfig(family="baseline", frontend=FrontendConfig(**PAPER_FRONTEND))


def mel_raw_preset() -> UpstreamConfig:
    """80 log-mel + delta without CMVN.

    What per-utterance normalisation removes (the spectral mean, the strongest speaker cue of a
    pooled probe) is kept."""
    return UpstreamConfig(family="baseline", frontend=FrontendConfig(**{**PAPER_FRONTEND, "cmvn": False}))


def model_input_config(config: UpstreamConfig) -> UpstreamConfig:
    """A Transformer configuration -> its own input as a baseline: the same front end, R frames
    stacked side by side (one output frame per stacked step, as the encoder sees them), no encoder."""
    if config.encoder is None:
        return config
    return UpstreamConfig(family="baseline", frontend=config.frontend, stack=config.encoder.downsample_rate)


def build_model_input(ckpt=None, pretrained=None, precision="float32", max_frames=None, refresh=False) -> Upstream:
    """The ``model_input`` entry: the input of the Transformer in ``ckpt`` (without: of the presets)."""
    if pretrained is not None and pretrained is not False:
        raise ValueError("model_input takes ckpt=PATH (the Transformer whose input it gives), not pretrained")
    config = read_upstream_checkpoint(ckpt)[0] if ckpt is not None else transformer_preset("aalbert", 3)
    return Upstream(model_input_config(config))


_DESCRIPTIONS = {
    "mockingjay": "Mockingjay, {depth} Transformer layers (768 hidden, 12 heads, R = 3).",
    "aalbert": "Audio ALBERT: one shared Transformer layer applied {depth} times (768 hidden, R = 3).",
}
for _family, _description in _DESCRIPTIONS.items():
    for _depth in (3, 6, 12):
        register(
            UpstreamEntry(
                name=f"{_family}_{_depth}L",
                family=_family,
                num_layers=_depth,
                preset=lambda family=_family, depth=_depth: transformer_preset(family, depth),
                description=_description.format(depth=_depth),
            )
        )
register(UpstreamEntry(name="fbank", family="baseline", preset=fbank_preset, description=fbank_preset.__doc__))
register(UpstreamEntry(name="mel", family="baseline", preset=mel_preset, description=mel_preset.__doc__))
register(UpstreamEntry(name="mel_raw", family="baseline", preset=mel_raw_preset, description=mel_raw_preset.__doc__))
register(
    UpstreamEntry(
        name="model_input",
        family="baseline",
        preset=lambda: model_input_config(transformer_preset("aalbert", 3)),
        description="A Transformer checkpoint's own input: its front end's features stacked R frames to its frame rate.",
        builder=build_model_input,
    )
)
for _model in TORCHAUDIO_MODELS.values():
    register(
        UpstreamEntry(
            name=_model.name,
            family=_model.family,
            num_layers=12,
            preset=_model.no_preset,
            description=_model.description,
            requires=("torchaudio",),
            builder=lambda model=_model, **options: build_torchaudio_upstream(model, **options),
        )
    )
