"""Probing datasets of the speaker tasks: a corpus's speaker splits (``corpora.speaker_splits``)
as class targets per utterance or per upstream frame."""

from __future__ import annotations

import numpy as np
import torch

from corpora.label_frames import resampled_length
from corpora.speaker_splits import SpeakerDataConfig, load_speaker_splits
from corpora.utterance import Utterance

from .base import ProbeDataset, TaskData
from .frames import FrameGrid


def speaker_dataset(utterances: list[Utterance], speakers: list[str], grid: FrameGrid, per_frame: bool) -> ProbeDataset:
    """Targets: the speaker's class index, () per utterance or repeated on every upstream frame."""
    index = {speaker: i for i, speaker in enumerate(speakers)}
    labels = [torch.tensor(index[u.speaker], dtype=torch.int32) for u in utterances]
    if per_frame:
        counts = grid.num_frames([resampled_length(u.num_samples, u.sample_rate) for u in utterances])
        labels = [label.expand(int(count)).clone() for label, count in zip(labels, counts)]
    classes = [np.array([index[u.speaker]]) for u in utterances]
    return ProbeDataset([u.utt_id for u in utterances], [u.path for u in utterances], labels, classes)


def build_speaker_datasets(config: SpeakerDataConfig, grid: FrameGrid, per_frame: bool) -> TaskData:
    """``build_datasets`` of the speaker tasks."""
    splits = load_speaker_splits(config)
    return TaskData(
        *(speaker_dataset(getattr(splits, name), splits.speakers, grid, per_frame) for name in ("train", "dev", "test")),
        label_names=splits.speakers,
    )
