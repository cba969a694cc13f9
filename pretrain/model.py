"""The pretraining network: the upstream's Transformer encoder plus the prediction head,
the s3prl names of the head's weights, and the activation-checkpointing switch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from upstream.config import EncoderConfig
from upstream.encoder import TransformerEncoder
from upstream.s3prl.keys import rename_gamma_beta

# s3prl's SpecHead (pretraining head) key -> our PredictionHead key.
S3PRL_HEAD_KEYS = {"dense": "dense", "LayerNorm": "norm", "output": "output"}


class PredictionHead(nn.Module):
    """Pretraining head: (B, S, H) -> (B, S, target_dim * R), one output per stacked raw frame."""

    def __init__(self, config: EncoderConfig, target_dim: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.output = nn.Linear(config.hidden_size, target_dim * config.downsample_rate)
        for linear in (self.dense, self.output):
            nn.init.normal_(linear.weight, mean=0.0, std=config.initializer_range)
            nn.init.zeros_(linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.norm(F.gelu(self.dense(hidden))))


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


def recompute_layers_in_backward(encoder: TransformerEncoder) -> None:
    """Activation checkpointing: each Transformer layer keeps only its input for the backward
    pass and runs its forward again there (less memory, about one more forward per step).

    The layers' own ``forward`` is wrapped in place, so parameter names, checkpoints and the
    upstream's inference path stay as they are (without gradients, layers run plainly).
    AALBERT's one shared layer is wrapped once.
    """
    layers = {id(layer): layer for layer in map(encoder.layer_at, range(encoder.config.num_layers))}
    for layer in layers.values():
        plain = layer.forward

        def forward(hidden: torch.Tensor, attention_mask, _plain=plain) -> torch.Tensor:
            if torch.is_grad_enabled():
                return checkpoint(_plain, hidden, attention_mask, use_reentrant=False)
            return _plain(hidden, attention_mask)

        layer.forward = forward


def s3prl_head_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an s3prl ``SpecHead`` state dict to our :class:`PredictionHead` keys."""
    out = {}
    for raw_key, tensor in state.items():
        module, _, param = rename_gamma_beta(raw_key).rpartition(".")
        if module not in S3PRL_HEAD_KEYS:
            raise ValueError(f"s3prl SpecHead has a key this loader does not know: {raw_key}")
        out[f"{S3PRL_HEAD_KEYS[module]}.{param}"] = tensor
    return out
