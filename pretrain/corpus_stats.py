"""Corpus-level feature statistics: standardisation that keeps what per-utterance CMVN removes.

Per-utterance CMVN sets every utterance's mean frame to zero, so the spectral mean (the
strongest cue of who speaks, and of the channel) is gone before the model sees it. With
``data.corpus_cmvn`` a new pretraining run instead standardises every input and target
dimension with the mean and standard deviation of frames of its training corpus. The statistics
become part of the model's front end (``model.frontend.corpus_stats``), so its checkpoints carry
them to every later use (hub loading, probes, export refusals).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import torch

from corpora.utterance import Utterance
from upstream.audio import read_audio
from upstream.config import FrontendConfig
from upstream.frontend import FeatureExtractor, frame_mask

from .settings import PretrainSettings

log = logging.getLogger("pretrain")


def corpus_statistics(frontend: FrontendConfig, utterances: Sequence[Utterance], count: int, seed: int) -> dict[str, list[float]]:
    """Mean and standard deviation of every input and target dimension over the real frames of
    ``count`` utterances drawn with ``seed`` (float64 sums; a dimension that never varies gets
    standard deviation 1, so it is only centred)."""
    extractor = FeatureExtractor(dataclasses.replace(frontend, cmvn=False, corpus_stats=None))
    order = torch.randperm(len(utterances), generator=torch.Generator().manual_seed(seed))[:count]
    totals: dict[str, tuple] = {}  # kind -> (sum, sum of squares, frames)
    with torch.no_grad():
        for index in order.tolist():
            features = extractor([read_audio(utterances[index].path, frontend.sample_rate)], with_target=True)
            real = frame_mask(features.lengths, features.inputs.shape[1])[0]
            for kind, values in (("input", features.inputs[0, real]), ("target", features.targets[0, real])):
                values = values.double()
                first, second, frames = totals.get(kind, (0.0, 0.0, 0))
                totals[kind] = (first + values.sum(0), second + values.pow(2).sum(0), frames + len(values))
    stats: dict[str, list[float]] = {}
    for kind, (first, second, frames) in totals.items():
        mean = first / frames
        std = (second / frames - mean.pow(2)).clamp(min=0).sqrt()
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        stats[f"{kind}_mean"], stats[f"{kind}_std"] = mean.tolist(), std.tolist()
    return stats


def with_corpus_statistics(settings: PretrainSettings, utterances: Sequence[Utterance]) -> PretrainSettings:
    """A new run's settings with ``model.frontend`` standardising by corpus statistics, when
    ``data.corpus_cmvn`` asks for them (per-utterance CMVN is then off); otherwise unchanged."""
    frontend = settings.model.frontend
    if not settings.data.corpus_cmvn or frontend.corpus_stats is not None:
        return settings
    count = settings.data.corpus_cmvn_utterances
    stats = corpus_statistics(frontend, utterances, count, settings.runner.seed)
    log.info("data.corpus_cmvn: features standardised with statistics of %d training utterances", min(count, len(utterances)))
    model = dataclasses.replace(settings.model, frontend=dataclasses.replace(frontend, cmvn=False, corpus_stats=stats))
    return dataclasses.replace(settings, model=model)
