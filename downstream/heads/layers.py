"""Small classifier heads shared by the probing tasks."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from upstream.frontend import frame_mask


def check_hidden_sizes(hidden_sizes: Sequence[int], dropout: float) -> None:
    """Refuse a layer width below 1 (``[0]`` would leave a bias-only probe, ``[-5]`` fail
    inside torch) and a dropout outside [0, 1)."""
    bad = [size for size in hidden_sizes if isinstance(size, bool) or not isinstance(size, int) or size < 1]
    if bad:
        raise ValueError(f"expert.hidden_sizes must be layer widths >= 1 ([]: a linear probe), got {list(hidden_sizes)}")
    if not 0 <= dropout < 1:
        raise ValueError(f"expert.dropout must be in [0, 1), got {dropout}")


def build_mlp(input_size: int, hidden_sizes: Sequence[int], output_size: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear (-> ReLU -> Dropout -> Linear) ...: ``hidden_sizes=[]`` is one linear layer,
    ``[768, 768]`` the papers' Linear-ReLU-Linear-ReLU-Linear classifier."""
    layers: list[nn.Module] = []
    size = input_size
    for hidden in hidden_sizes:
        layers += [nn.Linear(size, hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        size = hidden
    layers.append(nn.Linear(size, output_size))
    return nn.Sequential(*layers)


class FeatureStandardizer(nn.BatchNorm1d):
    """(N, H) -> (N, H): each dimension standardised by batch statistics in training and their
    running averages in evaluation, with no learned scale or shift, so that a linear probe
    behind it stays linear (the standard linear-probe recipe of MAE, He et al. 2022).

    Why: pooled Transformer states vary little between utterances around a large per-dimension
    offset (aalbert_3L: spread 0.09 against an offset of 0.6), which a plain linear probe
    learns very slowly. A one-utterance training batch is normalised with the running
    statistics (batch statistics of one item are undefined).
    """

    def __init__(self, size: int):
        super().__init__(size, affine=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training and features.shape[0] == 1:
            return F.batch_norm(features, self.running_mean, self.running_var, training=False, eps=self.eps)
        return super().forward(features)


def mean_pool(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, S, H) -> (B, H): the mean over each utterance's real frames."""
    mask = frame_mask(lengths, features.shape[1]).unsqueeze(-1).to(features.dtype)
    return (features * mask).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(features.dtype)
