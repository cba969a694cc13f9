"""The learning-rate schedule both runners use."""

from __future__ import annotations

import torch


def linear_warmup_decay(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the optimizer's lr over ``warmup_steps`` updates, then linear decay
    towards 0 at ``total_steps``. Call ``scheduler.step()`` after each optimizer update.

    Update s (0-based) uses lr * (s + 1) / warmup_steps during warm-up, so no update is wasted
    at lr 0, and lr * (total_steps - s) / (total_steps - warmup_steps) after it.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_warmup_decay_factor(step, warmup_steps, total_steps))


def linear_warmup_decay_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """The share of the optimizer's lr that update ``step`` (0-based) uses (see linear_warmup_decay)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
