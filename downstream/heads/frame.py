"""Frame-level classification: a classifier on every upstream frame, scored over real frames.

Shared by the phone_linear / phone_1hidden / phone_2hidden and speaker_frame tasks; their
datasets give one label per upstream frame (see ``frames.FrameGrid``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from upstream.frontend import frame_mask

from ..base import Batch, Expert, StepOutput, UpstreamInfo
from .layers import build_mlp, check_hidden_sizes

IGNORE = -100  # target value of padded frames (cross_entropy's ignore_index)


@dataclass
class FrameClassifierConfig:
    """``hidden_sizes``: [] linear probe, [768] one hidden ReLU layer, [768, 768] two."""

    hidden_sizes: list[int] = field(default_factory=list)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_hidden_sizes(self.hidden_sizes, self.dropout)


def pad_frame_targets(batch: Batch, lengths: torch.Tensor) -> torch.Tensor:
    """Per-utterance (frames,) targets -> (B, S) long, IGNORE on padding.

    The targets were mapped to the upstream's frame grid when the dataset was built, so their
    lengths must equal the upstream's; a difference means the grid and the upstream disagree.
    """
    target_lengths = torch.tensor([t.numel() for t in batch.targets])
    mismatch = (target_lengths != lengths.cpu()).nonzero().flatten()
    if mismatch.numel():
        i = int(mismatch[0])
        raise ValueError(
            f"utterance {batch.utt_ids[i]}: {int(target_lengths[i])} frame labels but the upstream gave "
            f"{int(lengths[i])} frames"
        )
    padded = nn.utils.rnn.pad_sequence([t.long() for t in batch.targets], batch_first=True, padding_value=IGNORE)
    return padded.to(lengths.device)


class FrameClassificationExpert(Expert):
    """Cross-entropy on every real frame; metric: frame accuracy over real frames."""

    config_class = FrameClassifierConfig
    metric = "accuracy"

    def __init__(self, upstream: UpstreamInfo, config: dict, label_names: Sequence[str]):
        super().__init__(upstream, config, label_names)
        self.classifier = build_mlp(upstream.hidden_size, self.config.hidden_sizes, len(label_names), self.config.dropout)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> StepOutput:
        targets = pad_frame_targets(batch, lengths)  # (B, S)
        logits = self.classifier(features)  # (B, S, C)
        loss_sum = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="sum")
        frames = int(lengths.sum())
        correct = int(((logits.argmax(-1) == targets) & frame_mask(lengths, targets.shape[1])).sum())
        stats = {"loss_sum": float(loss_sum.detach()), "correct": correct, "frames": frames}
        return StepOutput(loss_sum / max(frames, 1), stats)

    def summarize(self, stats: dict[str, float]) -> dict[str, float]:
        # items: how many were scored, for the accuracy's standard error.
        return {
            "accuracy": stats["correct"] / stats["frames"],
            "loss": stats["loss_sum"] / stats["frames"],
            "items": stats["frames"],
        }

    def predict(self, features: torch.Tensor, lengths: torch.Tensor) -> list[list[str]]:
        best = self.classifier(features).argmax(-1)  # (B, S)
        return [[self.label_names[i] for i in row[:length].tolist()] for row, length in zip(best, lengths.tolist())]
