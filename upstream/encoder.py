"""The Mockingjay / AALBERT Transformer encoder and its pretraining prediction head.

Shapes: B batch, T frames (10 ms), S stacked frames (T // R), H hidden size, nh heads,
hd head size.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention
from .config import EncoderConfig

# Stacked frames encoded at once when a long input is cut into max_frames chunks (bounds the
# transient memory of inference on long files; a chunk's values do not depend on it).
CHUNK_FRAMES_PER_PASS = 1024


@lru_cache(maxsize=8)
def _sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """(length, dim) fixed sinusoidal positions.

    Built in float64 and then cast: a float32 table drifts by ~1e-4 at long positions, which
    s3prl's numpy table (float64) does not.
    """
    position = torch.arange(length, dtype=torch.float64)[:, None]
    pair = torch.div(torch.arange(dim), 2, rounding_mode="floor").to(torch.float64)
    angle = position / torch.pow(10000.0, 2 * pair / dim)[None, :]
    table = torch.empty(length, dim, dtype=torch.float64)
    table[:, 0::2] = angle[:, 0::2].sin()
    table[:, 1::2] = angle[:, 1::2].cos()
    return table.to(torch.float32)


def sinusoid_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """(length, dim) positions on ``device``; tables are built in chunks of 1024 to reuse."""
    table = _sinusoid_table(max(1024, math.ceil(length / 1024) * 1024), dim)
    return table[:length].to(device)


def stack_frames(features: torch.Tensor, lengths: torch.Tensor, rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) -> (B, T // R, D * R): R consecutive frames side by side; a tail of fewer
    than R frames is dropped. Returns the stacked features and (B,) stacked lengths."""
    if rate == 1:
        return features, lengths
    batch, frames, dim = features.shape
    usable = frames - frames % rate
    stacked = features[:, :usable].reshape(batch, usable // rate, dim * rate)
    return stacked, torch.div(lengths, rate, rounding_mode="floor")


class TransformerLayer(nn.Module):
    """One BERT layer: self-attention and a GELU feed-forward block, each with a residual
    connection and LayerNorm (after the residual, or before the block when pre_layer_norm)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_heads
        self.pre_layer_norm = config.pre_layer_norm
        self.attention_dropout = config.attention_dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)  # query, key and value in one matrix multiply
        self.attention_output = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(hidden, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, S, H) layer input -> query, key, value, each (B, nh, S, hd)."""
        batch, frames, _ = x.shape
        h = self.attention_norm(x) if self.pre_layer_norm else x
        return self.qkv(h).view(batch, frames, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)

    def attention_probabilities(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The attention weights this layer applies to input x: (B, nh, S, S), rows sum to 1.
        Materialises the full matrix, so it is for analysis, not for the forward pass."""
        q, k, _ = self._heads(x)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if attention_mask is not None:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        return scores.softmax(dim=-1)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, S, H); attention_mask: (B, 1, 1, S) bool, True on keys to attend, or None."""
        batch, frames, hidden = x.shape
        q, k, v = self._heads(x)
        context = attention(q, k, v, attention_mask, self.attention_dropout if self.training else 0.0)
        context = context.transpose(1, 2).reshape(batch, frames, hidden)
        x = x + self.dropout(self.attention_output(context))
        if not self.pre_layer_norm:
            x = self.attention_norm(x)
        h = self.ffn_norm(x) if self.pre_layer_norm else x
        h = self.ffn_out(F.gelu(self.ffn_in(h)))
        x = x + self.dropout(h)
        if not self.pre_layer_norm:
            x = self.ffn_norm(x)
        return x


class TransformerEncoder(nn.Module):
    """Stacked frames -> projection + sinusoidal positions (x position_scale) + LayerNorm
    (unless not input_layer_norm) -> N layers.

    ``forward`` returns N + 1 hidden states: the input representation, then each layer's
    output (with pre_layer_norm, each passed through its own output LayerNorm, as s3prl does).
    AALBERT (``share_layer``) holds one layer and applies it N times.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        stacked_dim = config.input_dim * config.downsample_rate
        if config.embedding_size:
            self.input_projection = nn.Linear(stacked_dim, config.embedding_size)
            self.embedding_projection = nn.Linear(config.embedding_size, config.hidden_size)
        else:
            self.input_projection = nn.Linear(stacked_dim, config.hidden_size)
            self.embedding_projection = None
        self.input_norm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.input_layer_norm else nn.Identity()
        )
        self.input_dropout = nn.Dropout(config.hidden_dropout)
        if config.share_layer:
            self.layer = TransformerLayer(config)
            self.layers = None
        else:
            self.layer = None
            self.layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.num_layers))
        self.output_norms = (
            nn.ModuleList(
                nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) for _ in range(config.num_layers + 1)
            )
            if config.pre_layer_norm
            else None
        )
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def layer_at(self, index: int) -> TransformerLayer:
        """The layer applied at depth ``index`` (the same object at every depth for AALBERT)."""
        return self.layer if self.layers is None else self.layers[index]

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """features: (B, T, input_dim) frames, lengths: (B,) real frame counts.

        Returns N + 1 hidden states of (B, S, H), S = T // R, zero on padded frames, and the
        (B,) real lengths in stacked frames. An item longer than ``max_frames`` stacked frames
        is cut as s3prl's ``torch.chunk`` cuts it: into n = ceil(L / max_frames) chunks of
        ceil(L / n) frames (the last one shorter), encoded independently (positions restart in
        each chunk), ``CHUNK_FRAMES_PER_PASS`` frames' worth of chunks at a time.
        """
        x, lengths = stack_frames(features, lengths, self.config.downsample_rate)
        batch, frames, _ = x.shape
        span = self.config.max_frames
        if not span or frames <= span:
            return self._encode(x, lengths), lengths
        # Each item's chunks depend on its own length only, so batching cannot move them.
        counts = torch.div(lengths + span - 1, span, rounding_mode="floor").clamp(min=1)  # (B,) n
        sizes = torch.div(lengths + counts - 1, counts, rounding_mode="floor")  # (B,) ceil(L / n)
        item = torch.repeat_interleave(torch.arange(batch, device=x.device), counts)  # (C,) owner of each chunk
        rank = torch.arange(item.numel(), device=x.device) - (torch.cumsum(counts, 0) - counts)[item]
        starts = rank * sizes[item]
        chunk_lengths = torch.minimum(sizes[item], lengths[item] - starts)  # (C,)
        offsets = torch.arange(int(sizes.max()), device=x.device)
        positions = starts[:, None] + offsets[None, :]  # (C, W) frame index of each chunk slot
        valid = offsets[None, :] < chunk_lengths[:, None]  # (C, W)
        chunks = x[item[:, None], positions.clamp(max=frames - 1)]  # (C, W, D * R)
        rows, columns = item[:, None].expand_as(positions), positions
        merged: list[torch.Tensor] = []
        # A few chunks at a time: attention and feed-forward intermediates of all C chunks at
        # once would grow with the input's length (a 30-minute file: gigabytes); this way only
        # the hidden states do.
        group = max(1, CHUNK_FRAMES_PER_PASS // chunks.shape[1])
        for first in range(0, chunks.shape[0], group):
            part = slice(first, first + group)
            states = self._encode(chunks[part], chunk_lengths[part])
            if not merged:
                merged = [state.new_zeros(batch, frames, state.shape[-1]) for state in states]
            keep = valid[part]
            for full, state in zip(merged, states):
                full[rows[part][keep], columns[part][keep]] = state[keep]
        return merged, lengths

    def _embed(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """x: (B, S, D * R) -> input representation (B, S, H), valid-frame mask (B, S), and
        whether any frame is padding."""
        frames = x.shape[1]
        h = self.input_projection(x)
        if self.embedding_projection is not None:
            h = self.embedding_projection(h)
        positions = self.config.position_scale * sinusoid_positions(frames, self.config.hidden_size, h.device)
        h = self.input_norm(h + positions.to(h.dtype))
        valid = torch.arange(frames, device=x.device)[None, :] < lengths[:, None]
        return self.input_dropout(h), valid, bool((lengths < frames).any())

    def attention_weights(self, features: torch.Tensor, lengths: torch.Tensor, layer_index: int) -> torch.Tensor:
        """Attention weights of layer ``layer_index`` (0-based) for the first ``max_frames``
        stacked frames: (B, nh, S, S). For analysis and plots."""
        if not 0 <= layer_index < self.config.num_layers:
            raise ValueError(f"layer_index must be in [0, {self.config.num_layers - 1}], got {layer_index}")
        x, lengths = stack_frames(features, lengths, self.config.downsample_rate)
        if self.config.max_frames:
            x, lengths = x[:, : self.config.max_frames], lengths.clamp(max=self.config.max_frames)
        h, valid, padded = self._embed(x, lengths)
        attention_mask = valid[:, None, None, :] if padded else None
        for index in range(layer_index):
            h = self.layer_at(index)(h, attention_mask)
        return self.layer_at(layer_index).attention_probabilities(h, attention_mask)

    def _encode(self, x: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, S, D * R) stacked frames, all within one attention span."""
        h, valid, padded = self._embed(x, lengths)
        attention_mask = valid[:, None, None, :] if padded else None
        states = [h]
        for index in range(self.config.num_layers):
            layer = self.layer_at(index)
            h = layer(h, attention_mask)
            states.append(h)
        if self.output_norms is not None:
            states = [norm(state) for norm, state in zip(self.output_norms, states)]
        if padded:
            keep = valid[:, :, None].to(h.dtype)
            states = [state * keep for state in states]
        return states
