"""Trivial predictors of the masked frames: what the model must beat to have learned anything.

Each predictor fills the positions the loss counts from what the model may see (the target
frames of the unselected positions of the same utterance), so its masked L1 on the held-out
batches, at the same masks, is a floor the model's masked L1 should fall below:

- ``zeros``: every target value 0 (the targets are CMVN-normalised, so this is the global mean);
- ``utterance_mean``: the mean target frame over the utterance's visible 10 ms frames;
- ``copy``: the nearest visible frame (the earlier one on a tie; at an edge, the one visible
  neighbour);
- ``interpolation``: linear interpolation, at 10 ms resolution, between the nearest visible
  frames before and after each masked frame (at an edge, the one visible neighbour).

A model that has learned the local continuity of speech beats copy and then interpolation; one
that has not may even lose to zeros.
"""

from __future__ import annotations

import torch

from upstream.encoder import stack_frames

from .data import MaskedBatch
from .masking import masked_l1

PREDICTORS = ("zeros", "utterance_mean", "copy", "interpolation")


def visible_frames(batch: MaskedBatch, rate: int) -> torch.Tensor:
    """(B, T) True on the real 10 ms frames whose stacked position is not selected."""
    batch_size, frames = batch.targets.shape[:2]
    selected = batch.selected.repeat_interleave(rate, dim=1)  # (B, S * R)
    padded = torch.zeros(batch_size, frames, dtype=torch.bool, device=selected.device)
    padded[:, : selected.shape[1]] = selected
    real = torch.arange(frames, device=selected.device)[None, :] < batch.lengths[:, None]
    return real & ~padded


def neighbours(visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T) visible -> the nearest visible frame at or before each frame (left), at or after
    it (right), both (B, T) indices (at an edge, the one visible neighbour twice), and the
    (B, T) position of each frame between them, 0 at left to 1 at right."""
    frames = visible.shape[1]
    index = torch.arange(frames, device=visible.device).expand_as(visible)
    before = torch.where(visible, index, -1).cummax(dim=1).values  # (B, T) last visible <= t, -1: none
    after = torch.where(visible, index, frames).flip(1).cummin(dim=1).values.flip(1)  # first visible >= t
    has_before, has_after = before >= 0, after < frames
    left = before.clamp(min=0)
    right = torch.where(has_after, after, left).clamp(max=frames - 1)
    left = torch.where(has_before, left, right)
    span = (right - left).clamp(min=1).float()
    return left, right, ((index - left).float() / span).clamp(0, 1)


def _gather(targets: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, T, D) targets at (B, T) frame indices."""
    return targets.gather(1, positions[..., None].expand_as(targets))


def interpolate(targets: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """(B, T, D) targets, (B, T) visible -> (B, T, D): each frame linearly interpolated between
    the nearest visible frames around it (visible frames keep their value)."""
    left, right, position = neighbours(visible)
    weight = position.to(targets.dtype)[..., None]  # (B, T, 1)
    return _gather(targets, left) * (1 - weight) + _gather(targets, right) * weight


def copy_nearest(targets: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """(B, T, D) targets, (B, T) visible -> (B, T, D): each frame replaced by the nearest
    visible frame (visible frames keep their value)."""
    left, right, position = neighbours(visible)
    return _gather(targets, torch.where(position > 0.5, right, left))


def predictions(batch: MaskedBatch, rate: int) -> dict[str, torch.Tensor]:
    """Each trivial predictor's output in the head's layout (B, S, Dt * R)."""
    visible = visible_frames(batch, rate)  # (B, T)
    weights = visible[..., None].to(batch.targets.dtype)
    mean = (batch.targets * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1)  # (B, 1, Dt)
    filled = {
        "zeros": torch.zeros_like(batch.targets),
        "utterance_mean": mean.expand_as(batch.targets),
        "copy": copy_nearest(batch.targets, visible),
        "interpolation": interpolate(batch.targets, visible),
    }
    return {name: stack_frames(values, batch.lengths, rate)[0] for name, values in filled.items()}


def trivial_losses(batches: list[MaskedBatch], rate: int) -> dict[str, float]:
    """Held-out masked L1 of every trivial predictor over ``batches`` (their fixed masks)."""
    totals = {name: 0.0 for name in PREDICTORS}
    count = 0.0
    for batch in batches:
        for name, prediction in predictions(batch, rate).items():
            error, elements = masked_l1(prediction, batch.targets, batch.lengths, batch.selected, rate)
            totals[name] += float(error)
        count += float(elements)
    return {name: total / max(count, 1.0) for name, total in totals.items()}
