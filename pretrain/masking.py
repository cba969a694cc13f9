"""Masked acoustic modelling: which frames to hide, how to hide them, and the loss on them.

Shapes: B utterances, T frames (10 ms), D input dims, Dt target dims, R frames per stacked
step, S = T // R stacked frames.

Selection works on stacked frames (what the encoder sees): about ``proportion`` of each
utterance's stacked frames, in spans of ``span`` consecutive ones (spans may overlap, as in
s3prl). Once per utterance it is decided whether the selected frames are zeroed, replaced by
random frames of the same utterance, or left as they are. The loss is L1 on every selected
position of the target (all R frames and all dims of each), never on padding.

Every random draw comes from the utterance's own generator, so an utterance gets the same mask
whichever batch, process or worker it lands in (this is what makes multi-process runs match
single-process ones and resumes exact); applying the draws is vectorised over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from upstream.encoder import stack_frames

from .settings import MaskingSettings

ZERO, RANDOM, KEEP = 0, 1, 2


@dataclass
class UtteranceDraw:
    """The random choices for one utterance of L stacked frames."""

    starts: torch.Tensor  # (spans,) first stacked frame of each span
    mode: int  # ZERO, RANDOM or KEEP
    sources: Optional[torch.Tensor]  # (L,) replacement frame for each position (mode RANDOM)
    band: tuple[int, int]  # input channels [start, start + width) zeroed (width 0: none)
    noise: Optional[torch.Tensor]  # (frames, D) additive noise, or None


def draw_for_utterance(
    generator: torch.Generator,
    stacked_length: int,
    frames: int,
    feature_dim: int,
    base_dim: int,
    settings: MaskingSettings,
    downsample_rate: int,
) -> UtteranceDraw:
    """All random choices for one utterance (``frames`` raw frames, ``stacked_length`` stacked)."""
    span = settings.span_for(downsample_rate)
    shortest = settings.min_stacked_frames(downsample_rate)
    if stacked_length < shortest:
        raise ValueError(
            f"an utterance of {stacked_length} stacked frames is too short to mask "
            f"(needs {shortest}: span {span} at proportion {settings.proportion})"
        )
    num_spans = max(1, round(settings.proportion * stacked_length / span))
    starts = torch.randperm(stacked_length - span + 1, generator=generator)[:num_spans]
    choice = float(torch.rand((), generator=generator))
    if choice < settings.zero_probability:
        mode = ZERO
    elif choice < settings.zero_probability + settings.random_probability:
        mode = RANDOM
    else:
        mode = KEEP
    sources = torch.randint(stacked_length, (stacked_length,), generator=generator) if mode == RANDOM else None
    band = (0, 0)
    if settings.frequency_width > 0:
        width = int(torch.randint(min(settings.frequency_width, base_dim) + 1, (), generator=generator))
        band = (int(torch.randint(base_dim - width + 1, (), generator=generator)), width)
    noise = None
    if settings.noise_proportion > 0 and float(torch.rand((), generator=generator)) < settings.noise_proportion:
        noise = torch.randn(frames, feature_dim, generator=generator) * settings.noise_std
    return UtteranceDraw(starts=starts, mode=mode, sources=sources, band=band, noise=noise)


def mask_frames(
    inputs: torch.Tensor,
    lengths: torch.Tensor,
    generators: Sequence[torch.Generator],
    settings: MaskingSettings,
    downsample_rate: int,
    base_dim: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide frames of a padded feature batch.

    Args:
        inputs: (B, T, D) features, zero past each length.
        lengths: (B,) real frame counts.
        generators: one per utterance.
        base_dim: channels per feature block (80 for 80 log-mel + delta); a frequency band is
            zeroed in every block (the log-mel and its delta alike).

    Returns:
        masked (B, T, D) model input, and selected (B, S) bool: the stacked positions the loss
        is computed on.
    """
    rate = downsample_rate
    batch, frames, dim = inputs.shape
    stacked = frames // rate
    stacked_lengths = torch.div(lengths, rate, rounding_mode="floor")
    draws = [
        draw_for_utterance(g, int(n), int(t), dim, base_dim, settings, rate)
        for g, n, t in zip(generators, stacked_lengths, lengths)
    ]
    span = settings.span_for(rate)

    # Span starts -> selected positions: a position is selected when a span started at most
    # span - 1 steps before it (a running count of starts, differenced over the span).
    starts = torch.zeros(batch, stacked, dtype=torch.int32)
    rows = torch.cat([torch.full_like(d.starts, b) for b, d in enumerate(draws)])
    starts[rows, torch.cat([d.starts for d in draws])] = 1
    running = starts.cumsum(1)
    selected = (running - F.pad(running, (span, 0))[:, :stacked]) > 0  # (B, S)

    modes = torch.tensor([d.mode for d in draws])
    x = inputs[:, : stacked * rate].reshape(batch, stacked, rate * dim)  # (B, S, R*D) view
    sources = torch.arange(stacked).repeat(batch, 1)
    for b, draw in enumerate(draws):
        if draw.sources is not None:
            sources[b, : draw.sources.numel()] = draw.sources
    replaced = x.gather(1, sources[:, :, None].expand_as(x))
    x = torch.where((selected & (modes == RANDOM)[:, None])[:, :, None], replaced, x)
    x = torch.where((selected & (modes == ZERO)[:, None])[:, :, None], torch.zeros((), dtype=x.dtype), x)
    masked = torch.cat([x.reshape(batch, stacked * rate, dim), inputs[:, stacked * rate :]], dim=1)

    if settings.frequency_width > 0:
        band_start = torch.tensor([d.band[0] for d in draws])[:, None]
        band_width = torch.tensor([d.band[1] for d in draws])[:, None]
        channel = torch.arange(dim)[None, :] % base_dim
        hidden = (channel >= band_start) & (channel < band_start + band_width)  # (B, D)
        masked = masked.masked_fill(hidden[:, None, :], 0.0)
    if any(d.noise is not None for d in draws):
        noise = torch.zeros_like(masked)
        for b, draw in enumerate(draws):
            if draw.noise is not None:
                noise[b, : draw.noise.shape[0]] = draw.noise
        masked = masked + noise  # noise rows stop at each utterance's length: padding stays zero
    return masked, selected


def masked_l1(
    prediction: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, selected: torch.Tensor, downsample_rate: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of |prediction - target| over every selected position.

    Args:
        prediction: (B, S, Dt * R) head output.
        targets: (B, T, Dt) frame targets.
        selected: (B, S) bool; only real frames are ever selected.

    Returns:
        (sum of absolute errors, number of elements), both 0-dim float tensors; the loss is
        their ratio (kept apart so batches split over processes can share one denominator).
    """
    stacked_targets, _ = stack_frames(targets, lengths, downsample_rate)
    stacked_targets = stacked_targets[:, : prediction.shape[1]]
    errors = (prediction.float() - stacked_targets.float()).abs()[selected]  # (positions, Dt * R)
    return errors.sum(), torch.tensor(float(errors.numel()), device=errors.device)
