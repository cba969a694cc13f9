"""The CPU attention-with-dropout path against the plain formula with the same dropout mask."""

import math

import pytest
import torch
import torch.nn.functional as F

from upstream.attention import DropoutAttention, attention, keep_mask


def plain_attention(query, key, value, key_mask, keep, drop_probability):
    """The textbook computation, materialising everything (the reference)."""
    scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, float("-inf"))
    return (scores.softmax(-1) * keep / (1 - drop_probability)) @ value


def inputs(dtype=torch.float64, batch=2, heads=3, frames=37, head_size=8):
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(batch, heads, frames, head_size, generator=generator, dtype=dtype) for _ in range(3)]
    key_mask = torch.ones(batch, 1, 1, frames, dtype=torch.bool)
    key_mask[-1, ..., frames - 8 :] = False  # the last item has 8 padded frames
    return [t.requires_grad_() for t in tensors], key_mask


@pytest.mark.parametrize("masked", [True, False])
def test_output_and_gradients_match_the_plain_formula(masked):
    (query, key, value), key_mask = inputs()
    key_mask = key_mask if masked else None
    torch.manual_seed(5)
    output = DropoutAttention.apply(query, key, value, key_mask, 0.25)
    torch.manual_seed(5)  # the same draw: the mask is the function's first use of the generator
    keep = keep_mask((2 * 3, 37, 37), 0.25).view(2, 3, 37, 37)
    expected = plain_attention(query, key, value, key_mask, keep, 0.25)
    assert (output - expected).abs().max() < 1e-12
    upstream_gradient = torch.randn_like(output)
    ours = torch.autograd.grad(output, (query, key, value), upstream_gradient)
    reference = torch.autograd.grad(expected, (query, key, value), upstream_gradient)
    for name, a, b in zip("qkv", ours, reference):
        assert (a - b).abs().max() < 1e-12, name


def test_bf16_inputs_follow_float32_within_bf16_precision():
    (query, key, value), key_mask = inputs(torch.float32)
    low = [t.detach().bfloat16().requires_grad_() for t in (query, key, value)]
    torch.manual_seed(1)
    exact = DropoutAttention.apply(query, key, value, key_mask, 0.1)
    torch.manual_seed(1)
    rounded = DropoutAttention.apply(*low, key_mask, 0.1)
    assert rounded.dtype == torch.bfloat16
    assert (rounded.float() - exact).abs().max() < 0.05
    rounded.float().sum().backward()
    exact.sum().backward()
    assert (low[2].grad.float() - value.grad).abs().max() < 0.05


def test_keep_mask_rate_and_seeding():
    torch.manual_seed(3)
    first = keep_mask((1000, 1001), 0.1)
    torch.manual_seed(3)
    assert torch.equal(first, keep_mask((1000, 1001), 0.1))
    rate = first.float().mean().item()
    # 1e6 draws: the standard error of the kept fraction is 3e-4
    assert abs(rate - 0.9) < 2e-3
    assert keep_mask((5, 7), 0.0).all()


def test_dispatch_uses_fused_attention_without_dropout_or_gradients():
    (query, key, value), key_mask = inputs(torch.float32)
    fused = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask)
    assert torch.allclose(attention(query, key, value, key_mask, 0.0), fused, atol=1e-6)
    with torch.no_grad():
        torch.manual_seed(2)
        dropped = attention(query, key, value, key_mask, 0.5)
    assert not torch.allclose(dropped, fused, atol=1e-3)  # dropout does act without gradients


def test_dropout_is_unbiased_on_average():
    """Inverted dropout keeps the expected output: the mean over many masks approaches the
    output without dropout."""
    (query, key, value), key_mask = inputs(torch.float64, batch=1, heads=1, frames=16)
    without = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask)
    torch.manual_seed(0)
    mean = torch.stack([DropoutAttention.apply(query, key, value, key_mask, 0.3) for _ in range(2000)]).mean(0)
    assert (mean - without).abs().max() < 0.05
    single = DropoutAttention.apply(query, key, value, key_mask, 0.3)
    assert (single - without).abs().max() > 0.05
