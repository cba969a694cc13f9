"""Featurizer: N + 1 upstream hidden states -> one feature sequence for the expert."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn


class Featurizer(nn.Module):
    """A learnable softmax-weighted sum of all hidden states, or one chosen state.

    Args:
        num_hidden_states: N + 1 for an N-layer upstream (1 for plain features).
        layer: None for the weighted sum (weights start uniform); otherwise the index of one
            hidden state (0 = input representation, N = last layer, -1 = last layer).
    """

    def __init__(self, num_hidden_states: int, layer: Optional[int] = None):
        super().__init__()
        if layer is not None and not -num_hidden_states <= layer < num_hidden_states:
            raise ValueError(
                f"layer {layer} does not exist: the upstream has {num_hidden_states} hidden states "
                f"(0 .. {num_hidden_states - 1}, or -1 for the last); omit -l for the weighted sum"
            )
        self.num_hidden_states = num_hidden_states
        self.layer = None if layer is None else layer % num_hidden_states
        # Zero logits = uniform softmax weights at the start.
        self.weights = nn.Parameter(torch.zeros(num_hidden_states)) if layer is None else None

    @property
    def mode(self) -> str:
        """'weighted_sum' or 'layer_<i>' (for logs and results)."""
        return "weighted_sum" if self.layer is None else f"layer_{self.layer}"

    def layer_weights(self) -> list[float]:
        """The softmax weight of every hidden state (one-hot for a chosen layer)."""
        if self.weights is None:
            return [float(i == self.layer) for i in range(self.num_hidden_states)]
        return self.weights.detach().softmax(-1).tolist()

    def forward(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        """N + 1 tensors of (B, S, H) -> (B, S, H). With one chosen layer, that state alone
        may be given instead (what the feature cache keeps)."""
        if self.weights is None and len(hidden_states) == 1:
            return hidden_states[0]
        if len(hidden_states) != self.num_hidden_states:
            raise ValueError(f"expected {self.num_hidden_states} hidden states, got {len(hidden_states)}")
        if self.weights is None:
            return hidden_states[self.layer]
        stacked = torch.stack(list(hidden_states), dim=0)  # (N + 1, B, S, H)
        weights = self.weights.softmax(-1).to(stacked.dtype)
        return torch.einsum("l,lbsh->bsh", weights, stacked)
