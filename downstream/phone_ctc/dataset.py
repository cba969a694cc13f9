"""Phone sequences for CTC: the 10 ms labels with repeats collapsed and silence removed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from corpora.label_frames import resampled_length
from corpora.phone_splits import LabelledUtterance, PhoneDataConfig, load_phone_splits
from downstream.base import ProbeDataset, TaskData
from downstream.frames import FrameGrid
from downstream.heads.ctc import ctc_frames_needed
from downstream.phone_datasets import labelled_dataset


@dataclass
class PhoneSequenceConfig(PhoneDataConfig):
    silence_index: Optional[int] = 0  # class dropped from the sequences (None: keep every class)


def phone_sequence(labels: torch.Tensor, silence_index: Optional[int]) -> torch.Tensor:
    """(T,) frame labels -> (L,) phone sequence: runs of one label become one, silence goes."""
    sequence = torch.unique_consecutive(labels)
    return sequence if silence_index is None else sequence[sequence != silence_index]


def sequence_dataset(items: list[LabelledUtterance], grid: FrameGrid, silence_index: Optional[int]) -> ProbeDataset:
    sequences = [phone_sequence(item.labels, silence_index) for item in items]
    frames = grid.num_frames([resampled_length(i.utterance.num_samples, i.utterance.sample_rate) for i in items])
    for item, sequence, count in zip(items, sequences, frames.tolist()):
        if ctc_frames_needed(sequence) > count:
            raise ValueError(
                f"utterance {item.utterance.utt_id}: {sequence.numel()} phones need at least "
                f"{ctc_frames_needed(sequence)} frames for CTC, but the upstream gives {count}"
            )
    return labelled_dataset(items, sequences)


def build_datasets(data_config: PhoneSequenceConfig, grid: FrameGrid) -> TaskData:
    splits = load_phone_splits(data_config)
    return TaskData(
        *(sequence_dataset(getattr(splits, name), grid, data_config.silence_index) for name in ("train", "dev", "test")),
        label_names=splits.phone_names,
    )


DataConfig = PhoneSequenceConfig  # the data section's defaults (see downstream/discovery.py)
