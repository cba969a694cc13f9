"""Comparison upstreams from torchaudio: wav2vec 2.0 Base, HuBERT Base, WavLM Base+.

Each is torchaudio's own model (``torchaudio.models`` builder; ``pretrained=True`` loads the
``torchaudio.pipelines`` bundle's weights, which torchaudio downloads once into torch.hub's
cache) behind this project's upstream contract, so probing, frame-rate matching, layer-wise
analysis and the report use them unchanged:

- hidden states: the CNN features after the feature projection (the Transformer's input,
  before its convolutional positions), then every Transformer layer's output: 13 states;
- one frame per 320 samples (20 ms); lengths per item; frames past them are zero;
- each item gets the same values alone as in any batch: the CNN (whose first block normalises
  over the whole utterance) runs on each waveform alone, and the Transformer masks padding.
"""

from __future__ import annotations

import functools
import math
import urllib.error
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torchaudio
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from utility.checkpoint_file import read_checkpoint_file

from .audio import SAMPLE_RATE, check_waveforms
from .download import OFFLINE_VARIABLE, offline
from .inputs import Waveforms, waveform_list
from .random_weights import random_weights_warning

BUNDLE_URL = "https://download.pytorch.org/torchaudio/models/{file_name}"


@dataclass(frozen=True)
class TorchaudioModel:
    """One comparison model: our entry name, torchaudio's bundle and builder, the bundle's
    weight file (as torchaudio names it in torch.hub's checkpoint folder)."""

    name: str
    family: str
    bundle: str  # torchaudio.pipelines attribute
    builder: str  # torchaudio.models function building the same architecture
    file_name: str
    description: str
    relative_positions: bool = False  # WavLM: gated relative position bias, masks padding by key

    @property
    def url(self) -> str:
        return BUNDLE_URL.format(file_name=self.file_name)

    def cache_path(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints" / self.file_name

    def no_preset(self) -> Any:
        """The registry's preset: there is none, so pretraining refuses this name clearly."""
        raise ValueError(
            f"upstream {self.name!r} is torchaudio's {self.bundle} model: it is for comparison and cannot be pretrained here"
        )


TORCHAUDIO_MODELS = {
    model.name: model
    for model in (
        TorchaudioModel(
            "wav2vec2_base",
            "wav2vec2",
            "WAV2VEC2_BASE",
            "wav2vec2_base",
            "wav2vec2_fairseq_base_ls960.pth",
            "wav2vec 2.0 Base from torchaudio (WAV2VEC2_BASE, LibriSpeech 960 h; 12 layers, 768 hidden, 20 ms frames).",
        ),
        TorchaudioModel(
            "hubert_base",
            "hubert",
            "HUBERT_BASE",
            "hubert_base",
            "hubert_fairseq_base_ls960.pth",
            "HuBERT Base from torchaudio (HUBERT_BASE, LibriSpeech 960 h; 12 layers, 768 hidden, 20 ms frames).",
        ),
        TorchaudioModel(
            "wavlm_base_plus",
            "wavlm",
            "WAVLM_BASE_PLUS",
            "wavlm_base",
            "wavlm_base_plus.pth",
            "WavLM Base+ from torchaudio (WAVLM_BASE_PLUS, 94k h; 12 layers, 768 hidden, 20 ms frames).",
            relative_positions=True,
        ),
    )
}


class TorchaudioUpstream(nn.Module):
    """A torchaudio wav2vec 2.0-style model with this project's upstream interface.

    ``encoder`` is the whole torchaudio model (CNN, projection and Transformer): what a
    probe stores when the weights are random and what fine-tuning trains. Fine-tuning runs
    without layer drop.
    """

    def __init__(self, spec: TorchaudioModel, model: nn.Module):
        super().__init__()
        self.spec = spec
        self.encoder = model
        # (kernel, stride) of each CNN block, in samples of its input.
        self.conv_layout = tuple((layer.kernel_size, layer.stride) for layer in model.feature_extractor.conv_layers)

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def downsample_rate(self) -> int:
        """Samples between consecutive frames: the product of the CNN strides (320)."""
        return math.prod(stride for _, stride in self.conv_layout)

    @property
    def receptive_field(self) -> int:
        """Samples one frame sees (400 for the 7-block CNN)."""
        field = 1
        for kernel, stride in reversed(self.conv_layout):
            field = (field - 1) * stride + kernel
        return field

    @property
    def hidden_size(self) -> int:
        return self.encoder.encoder.feature_projection.projection.out_features

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size,) * self.num_hidden_states

    @property
    def num_hidden_states(self) -> int:
        return len(self.encoder.encoder.transformer.layers) + 1

    @property
    def min_samples(self) -> int:
        return self.receptive_field

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """(N,) waveform lengths in samples -> (N,) frame counts (each CNN block: (L - k) // s + 1)."""
        frames = torch.as_tensor(num_samples, dtype=torch.long)
        for kernel, stride in self.conv_layout:
            frames = torch.div(frames - kernel, stride, rounding_mode="floor") + 1
        return frames.clamp(min=0)

    @property
    def first_frame_centre(self) -> float:
        """Frame 0 sees samples [0, receptive_field): its centre, as for Kaldi's snip_edges."""
        return self.receptive_field / 2

    def forward(
        self, wavs: Waveforms, wav_lengths: Optional[torch.Tensor] = None, *, sample_rate: Optional[int] = None
    ) -> dict[str, object]:
        """Same contract as ``upstream.Upstream.forward``: 13 hidden states (B, frames, 768)."""
        wavs = waveform_list(wavs, wav_lengths, sample_rate, self.sample_rate)
        check_waveforms(wavs, self.min_samples)
        dtype = next(self.encoder.parameters()).dtype
        cnn = self.encoder.feature_extractor
        # Alone, each waveform's CNN output does not depend on the other items' lengths.
        features = [cnn(wav.to(self.device, dtype)[None], None)[0][0] for wav in wavs]
        lengths = torch.tensor([feature.shape[0] for feature in features], device=self.device)
        states = self._transformer_states(pad_sequence(features, batch_first=True), lengths)
        states = [state.float() for state in states]
        return {"hidden_states": tuple(states), "last_hidden_state": states[-1], "lengths": lengths}

    def _transformer_states(self, features: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """(B, T, 512) CNN features -> projection output and each layer's output, zero past
        ``lengths``. Follows torchaudio's Encoder.extract_features, with the padding mask each
        attention kind takes (WavLM's relative-position attention masks by key)."""
        encoder = self.encoder.encoder
        transformer = encoder.transformer
        padding = torch.arange(features.shape[1], device=features.device)[None, :] >= lengths[:, None]  # (B, T)
        padded = bool(padding.any())
        x = encoder.feature_projection(features).masked_fill(padding[..., None], 0.0)
        states = [x]
        x = x + transformer.pos_conv_embed(x)
        if transformer.layer_norm_first:
            x = transformer.layer_norm(x)
        x = transformer.dropout(x)
        attention_mask = key_padding_mask = None
        if padded and self.spec.relative_positions:  # additive, like the position bias it is added to
            key_padding_mask = torch.zeros_like(padding, dtype=x.dtype).masked_fill(padding, float("-inf"))
        elif padded:  # torchaudio's additive mask, (B, 1, T, T)
            attention_mask = (-10000.0 * padding[:, None, None, :].to(x.dtype)).expand(-1, 1, x.shape[1], -1)
        position_bias = None
        for layer in transformer.layers:
            x, position_bias = layer(x, attention_mask, position_bias=position_bias, key_padding_mask=key_padding_mask)
            states.append(x)
        if padded:
            keep = (~padding)[..., None].to(x.dtype)
            states = [state * keep for state in states]
        return states


def build_torchaudio_upstream(
    spec: TorchaudioModel,
    ckpt: Optional[Union[str, Path]] = None,
    pretrained: Optional[Union[bool, str]] = None,
    precision: str = "float32",
    max_frames: Optional[int] = None,
    refresh: bool = False,
) -> TorchaudioUpstream:
    """The model ``spec`` names, with torchaudio's pretrained weights (``pretrained=True`` or
    the bundle name), a state-dict file (``ckpt``, e.g. the bundle's ``.pth``), or random
    weights (``pretrained=False``; also without either, with a warning). ``precision`` is a
    torch dtype name that ``upstream.build_upstream`` has checked."""
    if max_frames is not None:
        raise ValueError(f"max_frames applies to Mockingjay/AALBERT only; {spec.name} attends over whole inputs")
    if pretrained not in (None, False, True, spec.bundle):
        raise ValueError(
            f"{spec.name}: pretrained must be True (torchaudio's {spec.bundle} weights) or False, got {pretrained!r}"
        )
    if ckpt is not None and pretrained not in (None, False):
        raise ValueError(f"{spec.name}: give ckpt=PATH or pretrained=True, not both")
    if ckpt is not None:
        check_file_is_of(spec, ckpt)  # by its name, before building anything
    if pretrained not in (None, False):
        model = _pretrained_model(spec, refresh)
    else:
        model = getattr(torchaudio.models, spec.builder)()
        if ckpt is not None:
            _load_state_file(model, ckpt, spec)
        elif pretrained is None:
            warnings.warn(
                random_weights_warning(
                    spec.name,
                    f"pass pretrained=True for torchaudio's {spec.bundle} weights (downloaded once), "
                    f"or ckpt=PATH to its file {spec.file_name}",
                    f"give -k PATH to torchaudio's {spec.bundle} file {spec.file_name} for trained weights",
                ),
                stacklevel=4,
            )
    return TorchaudioUpstream(spec, model.to(getattr(torch, precision))).eval()


def _pretrained_model(spec: TorchaudioModel, refresh: bool) -> nn.Module:
    path = spec.cache_path()
    if refresh:
        path.unlink(missing_ok=True)
    if path.is_file():  # torchaudio reads the cache without a request
        return getattr(torchaudio.pipelines, spec.bundle).get_model()
    fixes = f"download {spec.url} by other means and place it at {path}, or pass ckpt=PATH to a copy of it"
    if offline():
        raise RuntimeError(
            f"{spec.name}: torchaudio's {spec.bundle} weights are not in the cache "
            f"and network access is off ({OFFLINE_VARIABLE}=1); {fixes}"
        )
    try:
        return getattr(torchaudio.pipelines, spec.bundle).get_model()
    except (urllib.error.URLError, OSError) as error:
        raise RuntimeError(f"{spec.name}: fetching torchaudio's {spec.bundle} weights failed ({error}); {fixes}") from error


def fitting_models(state: dict[str, torch.Tensor]) -> list[TorchaudioModel]:
    """The comparison models whose architecture (state-dict keys and shapes) ``state`` has.
    WavLM differs from the others by its keys; wav2vec 2.0 Base and HuBERT Base share keys and
    shapes exactly, so a file of either fits both."""
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    return [candidate for candidate in TORCHAUDIO_MODELS.values() if shapes == _state_shapes(candidate.builder)]


@functools.lru_cache(maxsize=None)
def _state_shapes(builder: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict of ``torchaudio.models.<builder>()``."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return {key: tuple(value.shape) for key, value in getattr(torchaudio.models, builder)().state_dict().items()}


def check_file_is_of(spec: TorchaudioModel, path: Union[str, Path], state: Optional[dict[str, torch.Tensor]] = None) -> None:
    """Refuse a file that holds another comparison model than ``spec``, naming the entry for it:
    by its bundle file name (torchaudio's names, the only way to tell wav2vec 2.0 Base from
    HuBERT Base, which share every key and shape) and, given ``state``, by its architecture."""
    named = [other for other in TORCHAUDIO_MODELS.values() if other.file_name == Path(path).name and other is not spec]
    fitting = fitting_models(state) if state is not None else [spec]
    if not named and (spec in fitting or not fitting):
        return
    other = named[0] if named else fitting[0]
    names = " or ".join(f"-u {m.name}" for m in (named or fitting))
    raise ValueError(
        f"{path} holds torchaudio's {other.bundle} model ({other.family}), not {spec.bundle}: load it with {names} "
        f"(python: torch.hub.load(..., '{other.name}', ckpt=...))"
    )


def _load_state_file(model: nn.Module, path: Union[str, Path], spec: TorchaudioModel) -> None:
    """A plain state dict of this architecture (what the bundle's file holds), strictly; a file
    of another comparison model is refused naming its entry (:func:`check_file_is_of`)."""
    state = read_checkpoint_file(path)
    check_file_is_of(spec, path, state)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{path} is not a state dict of torchaudio's {spec.builder}() model: missing keys {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}; unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{path} does not fit torchaudio's {spec.builder}() model: {error}") from error
