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

    def logits(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """features (B, S, H), lengths (B,) -> (B, C) class scores."""
        return self.classifier(self.standardizer(mean_pool(features, lengths)))

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
        return {"accuracy": stats["correct"] / stats["utterances"], "loss": stats["loss_sum"] / stats["utterances"]}

    def predict(self, features: torch.Tensor, lengths: torch.Tensor) -> list[list[str]]:
        best = self.logits(features, lengths).argmax(-1)
        return [[self.label_names[i]] for i in best.tolist()]
