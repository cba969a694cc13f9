"""Template expert: detects, on every upstream frame, whether the tone sounds.

A task's ``expert.py`` defines ``DownstreamExpert``, a subclass of ``downstream.base.Expert``:

- ``config_class``: a dataclass for the ``expert`` section of config.yaml (the only part of
  the config the expert sees);
- ``metric`` / ``higher_is_better``: which ``summarize`` value picks the best checkpoint;
- ``forward(features, lengths, batch)``: the loss and additive statistics of one batch;
- ``summarize(stats)``: statistics summed over batches (and processes) -> metrics;
- ``predict(features, lengths)``: label names per utterance, for ``-m inference``.

``features`` is the featurizer's output, (B, S, H), zero past ``lengths``; ``batch.targets``
holds whatever the dataset gave per utterance (here (S,) labels on the upstream's frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from downstream.base import Batch, Expert, StepOutput, UpstreamInfo
from upstream.frontend import frame_mask


@dataclass
class DetectorConfig:
    hidden_size: int = 32


class DownstreamExpert(Expert):
    """A small MLP giving the probability of "tone" on each frame; binary cross-entropy over
    real frames; metric: frame accuracy."""

    config_class = DetectorConfig
    metric = "accuracy"
    higher_is_better = True
    prediction_unit = "frames"

    def __init__(self, upstream: UpstreamInfo, config: dict, label_names: Sequence[str]):
        super().__init__(upstream, config, label_names)  # sets self.config (a DetectorConfig)
        self.detector = nn.Sequential(
            nn.LayerNorm(upstream.hidden_size),
            nn.Linear(upstream.hidden_size, self.config.hidden_size),
            nn.ReLU(),
            nn.Linear(self.config.hidden_size, 1),
        )

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> StepOutput:
        logits = self.detector(features).squeeze(-1)  # (B, S)
        mask = frame_mask(lengths, logits.shape[1])  # (B, S) True on real frames
        targets = nn.utils.rnn.pad_sequence([t.float() for t in batch.targets], batch_first=True).to(logits.device)
        loss_sum = F.binary_cross_entropy_with_logits(logits[mask], targets[mask], reduction="sum")
        frames = int(mask.sum())
        stats = {
            "loss_sum": float(loss_sum.detach()),
            "correct": int(((logits[mask] > 0).float() == targets[mask]).sum()),
            "frames": frames,
        }
        return StepOutput(loss_sum / frames, stats)

    def summarize(self, stats: dict[str, float]) -> dict[str, float]:
        return {"accuracy": stats["correct"] / stats["frames"], "loss": stats["loss_sum"] / stats["frames"]}

    def predict(self, features: torch.Tensor, lengths: torch.Tensor) -> list[list[str]]:
        on = (self.detector(features).squeeze(-1) > 0).long()  # (B, S)
        return [[self.label_names[i] for i in row[:length].tolist()] for row, length in zip(on, lengths.tolist())]
