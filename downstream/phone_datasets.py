"""Probing datasets of the phone tasks: phone labels of a corpus's splits (``corpora.phone_splits``)
mapped to the upstream's frames."""

from __future__ import annotations

import torch

from corpora.label_frames import resampled_length
from corpora.phone_splits import LabelledUtterance, PhoneDataConfig, load_phone_splits

from .base import ProbeDataset, TaskData
from .frames import FrameGrid


def frame_label_dataset(items: list[LabelledUtterance], grid: FrameGrid) -> ProbeDataset:
    """Utterances with their labels mapped to the upstream's frames: targets (frames,) int32."""
    targets = [
        grid.align(item.labels, resampled_length(item.utterance.num_samples, item.utterance.sample_rate), item.utterance.utt_id)
        .to(torch.int32)
        for item in items
    ]
    return labelled_dataset(items, targets)


def labelled_dataset(items: list[LabelledUtterance], targets: list[torch.Tensor]) -> ProbeDataset:
    """One target tensor per utterance; the classes each one holds drive proportion subsets."""
    return ProbeDataset(
        [item.utterance.utt_id for item in items],
        [item.utterance.path for item in items],
        targets,
        [target.unique().numpy() for target in targets],
    )


def build_phone_frame_datasets(config: PhoneDataConfig, grid: FrameGrid) -> TaskData:
    """``build_datasets`` of the frame-level phone tasks: one phone label per upstream frame."""
    splits = load_phone_splits(config)
    return TaskData(
        frame_label_dataset(splits.train, grid),
        frame_label_dataset(splits.dev, grid),
        frame_label_dataset(splits.test, grid),
        splits.phone_names,
    )
