"""Which utterances go into which batch: seeded, sharded across processes, resumable."""

from __future__ import annotations

import torch


def epoch_batches(num_items: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """The training batches of one epoch for process ``rank``.

    One seeded permutation per epoch (the same on every process); process ``rank`` takes every
    ``world_size``-th item of it, cut so that all processes get the same number of batches.
    A resumed run recomputes the same plan and skips the batches already seen.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_items, generator=generator)
    usable = num_items - num_items % world_size
    mine = order[:usable][rank::world_size].tolist()
    return [mine[start : start + batch_size] for start in range(0, len(mine), batch_size)]


def eval_batches(num_items: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """Evaluation batches in corpus order; process ``rank`` takes every ``world_size``-th batch."""
    batches = [list(range(start, min(start + batch_size, num_items))) for start in range(0, num_items, batch_size)]
    return batches[rank::world_size]
