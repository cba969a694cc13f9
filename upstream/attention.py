"""Scaled dot-product attention, with a lean CPU path for training with attention dropout.

PyTorch's fused CPU attention kernels have no dropout, so ``F.scaled_dot_product_attention``
with ``dropout_p > 0`` on the CPU falls back to the plain path: it materialises and keeps
the (B, nh, S, S) scores, probabilities, dropout mask and dropped probabilities of every
layer for the backward pass and sweeps them through memory several times. ``DropoutAttention``
keeps only the one-byte dropout mask and recomputes the probabilities a few heads at a time
in the backward pass. At batch 8 x 1001 frames, 12 heads of 64, 2 threads: forward and
backward 0.84 s instead of 2.03 s, 186 MiB kept for the backward pass instead of 1171 MiB.

Shapes: B batch, nh heads, S query frames, K key frames, hd head size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def heads_per_block() -> int:
    """Heads processed together: one per thread, so that each thread's (S, K) probabilities
    stay in its own cache while every batched matrix multiply has work for all threads
    (at 2 threads, blocks of 1, 2 and 4 heads ran within 3 % of each other, 8 heads a third slower)."""
    return max(1, torch.get_num_threads())


# The dropout mask is drawn as 15-bit uniform integers, four from each 64-bit random
# word: 3x faster than ``bernoulli_``, which draws one 32-bit number per element.
# The drop probability is rounded to a multiple of 1 / 32768 (0.1 -> 0.100006).
_LEVELS = 1 << 15


def keep_mask(shape: tuple[int, ...], drop_probability: float) -> torch.Tensor:
    """A bool tensor of ``shape``: True (kept) with probability 1 - drop_probability, drawn
    from torch's default CPU generator, so ``torch.manual_seed`` and saved RNG states
    reproduce it."""
    count = math.prod(shape)
    # random_() fills int64 with 63 random bits (the sign bit is 0); the low 15 bits of each
    # 16-bit quarter are therefore uniform and independent.
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_()
    levels = words.view(torch.int16)[:count] & (_LEVELS - 1)
    return (levels >= round(drop_probability * _LEVELS)).view(shape)


def _key_bias(key_mask: torch.Tensor | None, batch: int, heads: int, keys: int, dtype: torch.dtype) -> torch.Tensor:
    """(B * nh, 1, K) additive bias (0 or -inf) from a (B, 1, 1, K) key mask, or (1, 1, K)
    zeros without one, broadcast over the query rows of the scores."""
    if key_mask is None:
        return torch.zeros(1, 1, keys, dtype=dtype)
    bias = torch.zeros(key_mask.shape, dtype=dtype).masked_fill_(~key_mask, float("-inf"))
    return bias.expand(batch, heads, 1, keys).reshape(batch * heads, 1, keys)


def _probabilities(bias: torch.Tensor, query: torch.Tensor, key: torch.Tensor, block: slice, scale: float) -> torch.Tensor:
    """Softmax attention probabilities (n, S, K) of the heads in ``block``, in float32 at least
    (bf16 scores are normalised in float32, as autocast does)."""
    scores = torch.baddbmm(bias[block] if bias.shape[0] > 1 else bias, query[block], key[block].transpose(1, 2), alpha=scale)
    return scores.softmax(dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))


class DropoutAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(hd) + key bias) with inverted dropout, times v."""

    @staticmethod
    def forward(ctx, query, key, value, key_mask, drop_probability):
        batch, heads, frames, head_size = query.shape
        keys = key.shape[2]
        scale = 1 / math.sqrt(head_size)
        # (B * nh, S, hd): every block of heads is then one contiguous slice
        query, key, value = (t.reshape(batch * heads, -1, head_size) for t in (query, key, value))
        keep = keep_mask((batch * heads, frames, keys), drop_probability)
        bias = _key_bias(key_mask, batch, heads, keys, query.dtype)
        output = torch.empty_like(query)
        step = heads_per_block()
        for start in range(0, batch * heads, step):
            block = slice(start, start + step)
            kept = _probabilities(bias, query, key, block, scale).mul_(keep[block]).to(value.dtype)
            torch.bmm(kept, value[block], out=output[block])
        # The 1 / (1 - p) of inverted dropout is applied to the (S, hd) output, not the (S, K) scores.
        output.mul_(1 / (1 - drop_probability))
        ctx.save_for_backward(query, key, value, output, keep, bias)
        ctx.drop_probability, ctx.shape = drop_probability, (batch, heads, frames, head_size)
        return output.view(batch, heads, frames, head_size)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        query, key, value, output, keep, bias = ctx.saved_tensors
        batch, heads, frames, head_size = ctx.shape
        scale = 1 / math.sqrt(head_size)
        grad_output = grad_output.reshape(batch * heads, frames, head_size)
        # Softmax backward needs rowsum(P * dP) = rowsum(dO * O) (dropout included): (B*nh, S, 1).
        precise = torch.promote_types(query.dtype, torch.float32)
        row_dot = (grad_output.to(precise) * output.to(precise)).sum(-1, keepdim=True)
        grad_output = grad_output * (1 / (1 - ctx.drop_probability))
        grad_query, grad_key, grad_value = torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)
        step = heads_per_block()
        for start in range(0, batch * heads, step):
            block = slice(start, start + step)
            probabilities = _probabilities(bias, query, key, block, scale)
            kept = (probabilities * keep[block]).to(value.dtype)
            torch.bmm(kept.transpose(1, 2), grad_output[block], out=grad_value[block])
            grad_kept = torch.bmm(grad_output[block], value[block].transpose(1, 2)).to(precise)
            grad_scores = grad_kept.mul_(keep[block]).sub_(row_dot[block]).mul_(probabilities).to(query.dtype)
            torch.bmm(grad_scores, key[block], out=grad_query[block])
            torch.bmm(grad_scores.transpose(1, 2), query[block], out=grad_key[block])
        grad_query.mul_(scale)
        grad_key.mul_(scale)
        shape = (batch, heads, -1, head_size)
        return grad_query.view(shape), grad_key.view(shape), grad_value.view(shape), None, None


def attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor | None, dropout: float
) -> torch.Tensor:
    """query (B, nh, S, hd), key and value (B, nh, K, hd), key_mask (B, 1, 1, K) bool (True:
    attend) or None; ``dropout`` on the attention probabilities (0 outside training).
    Returns (B, nh, S, hd)."""
    if dropout > 0 and query.device.type == "cpu" and torch.is_grad_enabled():
        # Autocast is off inside: the inputs arrive in the dtype autocast gave the projections.
        with torch.autocast("cpu", enabled=False):
            return DropoutAttention.apply(query, key, value, key_mask, dropout)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, dropout_p=dropout)
