"""Utterance classification: mean pooling over real frames, then one linear layer.

Shared by ``speaker_utterance`` (the speaker) and ``keyword_spotting`` (the spoken word); their
datasets give one class index per utterance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Batch, Expert, StepOutput, UpstreamInfo
from .layers import FeatureStandardizer, build_mlp, check_hidden_sizes, mean_pool


@dataclass
class UtteranceClassifierConfig:
    hidden_sizes: list[int] = field(default_factory=list)  # []: one linear layer (the protocol)
    dropout: float = 0.0
    standardize: bool = False  # standardise pooled features first (no learned parameters; see speaker_utterance/README.md)

    def __post_init__(self) -> None:
        check_hidden_sizes(self.hidden_sizes, self.dropout)


class UtteranceClassificationExpert(Expert):
    """Cross-entropy on the pooled utterance; metric: utterance accuracy."""

    config_class = UtteranceClassifierConfig
    metric = "accuracy"
    prediction_unit = "utterance"

    def __init__(self, upstream: UpstreamInfo, config: dict, label_names: Sequence[str]):
        super().__init__(upstream, config, label_names)
        # Identity when off: checkpoints of the plain probe keep their parameter names.
        self.standardizer = FeatureStandardizer(upstream.hidden_size) if self.config.standardize else nn.Identity()
        self.classifier = build_mlp(upstream.hidden_size, self.config.hidden_sizes, len(label_names), self.config.dropout)

        self._pooled_checked = False

    def logits(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """features (B, S, H), lengths (B,) -> (B, C) class scores."""
        pooled = mean_pool(features, lengths)
        if self.training and not self._pooled_checked and len(pooled) > 1:
            check_pooled_features_differ(pooled, features)
            self._pooled_checked = True
        return self.classifier(self.standardizer(pooled))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> StepOutput:
        targets = torch.stack(batch.targets).long().to(features.device)  # (B,)
        logits = self.logits(features, lengths)
        loss = F.cross_entropy(logits, targets)
        stats = {
            "loss_sum": float(loss.detach()) * len(batch),
            "correct": int((logits.argmax(-1) == targets).sum()),
            "utterances": len(batch),
        }
        return StepOutput(loss, stats)

    def summarize(self, stats: dict[str, float]) -> dict[str, float]:
        # items: how many were scored, for the accuracy's standard error.
        return {
            "accuracy": stats["correct"] / stats["utterances"],
            "loss": stats["loss_sum"] / stats["utterances"],
            "items": stats["utterances"],
        }

    def predict(self, features: torch.Tensor, lengths: torch.Tensor) -> list[list[str]]:
        best = self.logits(features, lengths).argmax(-1)
        return [[self.label_names[i]] for i in best.tolist()]


# Pooled vectors closer than this (relative to the features' largest magnitude) count as one. A
# mean that is zero by construction comes out near 1e-5 from features stored in float16 (the
# feature cache's default, rounding each value to 2**-11 of itself); real features differ between
# utterances by 1e-2 and more (pretrained Transformer states: 0.09 against values up to about 5).
IDENTICAL_POOLED = 1e-3


def check_pooled_features_differ(pooled: torch.Tensor, features: torch.Tensor) -> None:
    """pooled (B, H) of a training batch, features (B, S, H): stop with the reason when every
    utterance pools to the same vector, which no probe can tell apart."""
    pooled = pooled.detach()
    spread = float((pooled.amax(0) - pooled.amin(0)).max())
    scale = float(features.detach().abs().max())
    if spread <= IDENTICAL_POOLED * max(scale, 1e-12):
        raise ValueError(
            f"every utterance's mean-pooled features are the same (largest spread {spread:.1e} against values up to "
            f"{scale:.2g}), so no pooled probe can learn: features normalised per utterance (per-utterance CMVN, as in "
            "'mel') have a zero mean in every utterance; probe 'mel_raw' or 'fbank' instead, or a frame-level task"
        )
