"""A seeded proportion of the training utterances that keeps every class where it can."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def check_proportion(proportion: float) -> float:
    if isinstance(proportion, bool) or not isinstance(proportion, (int, float)) or not 0 < proportion <= 1:
        raise ValueError(
            f"runner.train_proportion must be a number in (0, 1] (e.g. 0.01 for 1 % of the training "
            f"utterances), got {proportion!r}"
        )
    return float(proportion)


def proportion_subset(classes: Sequence[np.ndarray], proportion: float, seed: int) -> list[int]:
    """Indices of round(proportion * n) utterances (at least one), drawn with ``seed``.

    Args:
        classes: for each utterance, the class indices it contains.

    Every class seen in the data gets at least one utterance: walking the utterances in the
    seeded random order, any utterance that brings a class not yet covered is taken first; the
    rest of the quota is filled in the same order. Coverage wins over the quota, so tiny
    proportions may return more utterances than asked (the count is recorded in results).
    """
    proportion = check_proportion(proportion)
    count = len(classes)
    if proportion == 1.0:
        return list(range(count))
    quota = max(1, round(proportion * count))
    order = np.random.default_rng(seed).permutation(count)
    covered: set[int] = set()
    chosen = []
    for index in order:
        new = set(classes[index].tolist()) - covered
        if new:
            covered |= new
            chosen.append(int(index))
    taken = set(chosen)
    rest = [int(i) for i in order if int(i) not in taken]
    chosen += rest[: max(0, quota - len(chosen))]
    return sorted(chosen)
