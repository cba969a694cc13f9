"""The pretraining network: the upstream's Transformer encoder plus the prediction head."""

from __future__ import annotations

import torch
from torch import nn

from upstream.encoder import PredictionHead, TransformerEncoder


class MaskedAcousticModel(nn.Module):
    """Masked frames in, reconstructed target frames out.

    ``encoder`` is the upstream's own module (shared, not copied), so the weights trained here
    are the weights an upstream checkpoint saves.
    """

    def __init__(self, encoder: TransformerEncoder, target_dim: int):
        super().__init__()
        self.encoder = encoder
        self.head = PredictionHead(encoder.config, target_dim)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """inputs: (B, T, D) masked frames, lengths: (B,) -> (B, T // R, Dt * R) predictions."""
        states, _ = self.encoder(inputs, lengths)
        return self.head(states[-1])

