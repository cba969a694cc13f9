"""Labels at 10 ms: one per 160 samples at 16 kHz (label t covers samples [160 t, 160 t + 160)),
T = ceil(samples / 160), the convention of s3prl's ``converted_aligned_phones.txt`` and of
this project's ``alignments/<subset>.frames.txt``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

from upstream.audio import SAMPLE_RATE

LABEL_HOP = 160  # samples per 10 ms label frame at 16 kHz
TOLERANCE = 1  # label frames of mismatch accepted at the end of an utterance


def resampled_length(num_samples: int, sample_rate: int, target_rate: int = SAMPLE_RATE) -> int:
    """Samples a file of ``num_samples`` at ``sample_rate`` has once resampled as ``read_audio`` does."""
    return math.ceil(num_samples * target_rate / sample_rate)


def read_frame_labels(path: str | Path, utt_ids: Iterable[str] | None = None) -> dict[str, list[int]]:
    """``utt_id label label ...`` lines (one integer per 10 ms frame), as in s3prl's
    ``converted_aligned_phones.txt`` and this corpus's ``alignments/<subset>.frames.txt``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    wanted = None if utt_ids is None else set(utt_ids)
    labels = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts or (wanted is not None and parts[0] not in wanted):
            continue
        try:
            labels[parts[0]] = [int(x) for x in parts[1:]]
        except ValueError as error:
            raise ValueError(f"{path}:{number}: labels must be integers ({error})") from error
    return labels
