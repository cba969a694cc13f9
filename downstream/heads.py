"""Small classifier heads shared by the probing tasks."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from upstream.frontend import frame_mask


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



def mean_pool(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, S, H) -> (B, H): the mean over each utterance's real frames."""
    mask = frame_mask(lengths, features.shape[1]).unsqueeze(-1).to(features.dtype)
    return (features * mask).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(features.dtype)
