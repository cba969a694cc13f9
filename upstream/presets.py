"""The named upstreams: the papers' Mockingjay and AALBERT sizes, plain-feature baselines, and
torchaudio's wav2vec 2.0 / HuBERT / WavLM Base models for comparison."""

from __future__ import annotations

from .config import EncoderConfig, FrontendConfig, UpstreamConfig
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
    """Exactly the Transformer models' input: 80 log-mel + delta, per-utterance CMVN."""
    return UpstreamConfig(family="baseline", frontend=FrontendConfig(**PAPER_FRONTEND))


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
