"""The published Mockingjay and Audio ALBERT checkpoints, as data.

Every checkpoint that s3prl 0.4.18 names in ``s3prl/upstream/mockingjay/hubconf.py`` and
``s3prl/upstream/audio_albert/hubconf.py``: its s3prl name, the aliases s3prl resolves to it,
the URL s3prl downloads it from, and the entry of ours it loads under. "Base" in s3prl's names
is the papers' 3-layer size and "Large" the 12-layer one (s3prl's recipe configs
``pretrain/mockingjay/config_model.yaml``, ``config_model_large.yaml`` and
``pretrain/audio_albert/config_model.yaml``: 3, 12 and 3 layers, the last with
``share_layer: True``). The files themselves keep 80-dim log-mel input at R = 1 (one frame per
10 ms); the loader reads every detail from each file's own config.

    build_upstream("mockingjay_3L", pretrained="mockingjay_960hr")   # s3prl name or alias
    find_published("mockingjay_960hr").get_model()                   # the same model
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from .config import UpstreamConfig
from .download import fetch
from .files import model_from_state, read_upstream_checkpoint
from .model import Upstream

_DROPBOX = "https://www.dropbox.com/s"
_HF = "https://huggingface.co/s3prl"
_LOG_MEL = "80-dim log-mel (CMVN), R = 1"
_LIBRI_960 = "LibriSpeech 960 h"


@dataclass(frozen=True)
class PublishedCheckpoint:
    """One published file. ``entry`` is the name it loads under (family and depth)."""

    name: str  # s3prl's full name, also the file name in the cache
    aliases: tuple[str, ...]  # s3prl's shorter names for it, most general first
    entry: str
    url: str
    training_data: str
    steps: int
    notes: str = ""
    features: str = _LOG_MEL

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def short_name(self) -> str:
        """The most specific alias (what users type), or the full name."""
        return self.aliases[-1] if self.aliases else self.name

    def read(self, refresh: bool = False) -> tuple[UpstreamConfig, dict[str, torch.Tensor], str, Path]:
        """Config, weights, format and cached path of the file, fetched first if it is not
        cached (or ``refresh``); a cached file that does not load is reported with its path
        and the way to fetch it again."""
        path = fetch(self, refresh=refresh)
        try:
            config, state, kind = read_upstream_checkpoint(path)
        except ValueError as error:
            raise ValueError(
                f"the cached file of published checkpoint '{self.short_name}' does not load: {path} ({error}); "
                "download it again with refresh=True, or delete the file"
            ) from error
        return config, state, kind, path

    def get_model(self, precision: str = "float32", max_frames: Optional[int] = None, refresh: bool = False) -> Upstream:
        """The model with these weights, in eval mode (like torchaudio's ``Bundle.get_model()``)."""
        config, state, kind, path = self.read(refresh)
        return model_from_state(config, state, f"{kind} checkpoint {path}", precision, max_frames)


# s3prl name, its aliases, the entry it loads under, URL, training data, steps, notes.
CATALOGUE: tuple[PublishedCheckpoint, ...] = (
    PublishedCheckpoint(
        "mockingjay_logMelLinearLarge_T_AdamW_b32_500k_360hr_drop1", ("mockingjay", "mockingjay_origin"), "mockingjay_12L",
        f"{_HF}/mockingjay/resolve/main/mockingjay_logMelLinearLarge_T_AdamW_b32_500k_360hr_drop1/states-500000.ckpt",
        "LibriSpeech train-clean-360 (360 h)", 500_000, "the paper's Mockingjay (s3prl's default 'mockingjay')",
        features=f"{_LOG_MEL}; target: 201-dim log linear spectrogram",
    ),
    PublishedCheckpoint(
        "mockingjay_logMelBase_T_AdamW_b32_200k_100hr", ("mockingjay_100hr",), "mockingjay_3L",
        f"{_DROPBOX}/luorglf8mdg67l2/states-200000.ckpt?dl=1", "LibriSpeech train-clean-100 (100 h)", 200_000,
    ),
    PublishedCheckpoint(
        "mockingjay_logMelBase_T_AdamW_b32_1m_960hr", (), "mockingjay_3L",
        f"{_DROPBOX}/jzx0xggk663jev6/states-1000000.ckpt?dl=1", _LIBRI_960, 1_000_000, "dropout 0.3",
    ),
    PublishedCheckpoint(
        "mockingjay_logMelBase_T_AdamW_b32_1m_960hr_drop1", ("mockingjay_960hr",), "mockingjay_3L",
        f"{_DROPBOX}/7f9z6dzc7oix6qv/states-1000000.ckpt?dl=1", _LIBRI_960, 1_000_000, "dropout 0.1",
    ),
    PublishedCheckpoint(
        "mockingjay_logMelBase_T_AdamW_b32_1m_960hr_seq3k", (), "mockingjay_3L",
        f"{_DROPBOX}/qnnvdrai2tfmjmh/states-1000000.ckpt?dl=1", _LIBRI_960, 1_000_000,
        "sequence length 3000 frames (instead of 1500)",
    ),
    PublishedCheckpoint(
        "audio_albert_logMelBase_T_share_AdamW_b32_1m_960hr_drop1", ("audio_albert", "audio_albert_960hr"), "aalbert_3L",
        f"{_HF}/audio_albert/resolve/main/audio_albert_logMelBase_T_share_AdamW_b32_1m_960hr_drop1/states-1000000.ckpt",
        _LIBRI_960, 1_000_000, "one shared layer applied 3 times (s3prl's default 'audio_albert')",
    ),
)

_BY_NAME = {name: checkpoint for checkpoint in CATALOGUE for name in checkpoint.names}
if len(_BY_NAME) != sum(len(checkpoint.names) for checkpoint in CATALOGUE):
    raise RuntimeError("a published checkpoint name or alias is listed twice")


def published_for(entry: str) -> list[PublishedCheckpoint]:
    """The published checkpoints that load under ``entry`` (may be none)."""
    return [checkpoint for checkpoint in CATALOGUE if checkpoint.entry == entry]


def find_published(pretrained: Union[str, bool], entry: str | None = None) -> PublishedCheckpoint:
    """The checkpoint ``pretrained`` names (s3prl name or alias), checked against ``entry``.

    ``pretrained=True`` picks the one checkpoint that fits ``entry``; where several or none
    fit, the error lists them. A checkpoint of another family or depth raises, naming the entry
    it loads under.
    """
    if pretrained is True:
        if entry is None:
            raise ValueError("pretrained=True needs an upstream name; or give a published name, e.g. pretrained='audio_albert'")
        fitting = published_for(entry)
        if len(fitting) == 1:
            return fitting[0]
        if not fitting:
            raise ValueError(f"no published checkpoint fits '{entry}'; {_fitting_entries_hint()}")
        raise ValueError(
            f"{len(fitting)} published checkpoints fit '{entry}'; choose one with pretrained=NAME: "
            + ", ".join(checkpoint.short_name for checkpoint in fitting)
        )
    if not isinstance(pretrained, str) or pretrained not in _BY_NAME:
        raise ValueError(
            f"unknown published checkpoint {pretrained!r}; known names: {', '.join(sorted(_BY_NAME))} "
            "(python hub.py --pretrained lists them)"
        )
    checkpoint = _BY_NAME[pretrained]
    if entry is not None and checkpoint.entry != entry:
        raise ValueError(
            f"published checkpoint '{pretrained}' ({checkpoint.name}) is a {describe_entry(checkpoint.entry)} model: "
            f"load it with '{checkpoint.entry}', not '{entry}' (e.g. torch.hub.load(REPO, '{checkpoint.entry}', "
            f"source='local', pretrained='{pretrained}'))"
        )
    return checkpoint


def describe_entry(entry: str) -> str:
    """'mockingjay_3L' -> '3-layer Mockingjay'."""
    family, _, depth = entry.rpartition("_")
    return f"{depth[:-1]}-layer {'AALBERT' if family == 'aalbert' else 'Mockingjay'}"


def _fitting_entries_hint() -> str:
    entries = sorted({checkpoint.entry for checkpoint in CATALOGUE})
    return f"published checkpoints load under {', '.join(entries)} (python hub.py --pretrained lists them)"


def random_weights_hint(entry: str) -> str:
    """The end of the random-weights warning (from its separator on): the published
    checkpoints that would fit ``entry``."""
    fitting = published_for(entry)
    if not fitting:
        return f"; no published checkpoint fits '{entry}': {_fitting_entries_hint()}"
    names = ", ".join(f"'{checkpoint.short_name}'" for checkpoint in fitting)
    return f", or pretrained=NAME for a published one that fits: {names} (python hub.py --pretrained lists them)"


def catalogue_table() -> str:
    """The catalogue as aligned text lines (``python hub.py --pretrained``)."""
    rows = [("name (aliases)", "loads under", "training data", "steps", "notes")]
    for checkpoint in CATALOGUE:
        names = checkpoint.name + (f" ({', '.join(checkpoint.aliases)})" if checkpoint.aliases else "")
        rows.append((names, checkpoint.entry, checkpoint.training_data, f"{checkpoint.steps:,}", checkpoint.notes))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in rows]
    lines.append("")
    lines.append("Load one with torch.hub.load(REPO, ENTRY, source='local', pretrained=NAME); URLs:")
    lines += [f"  {checkpoint.short_name}: {checkpoint.url}" for checkpoint in CATALOGUE]
    return "\n".join(line.rstrip() for line in lines)
