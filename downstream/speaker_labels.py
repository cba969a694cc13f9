"""Speaker identification splits of a LibriSpeech-layout corpus.

``split_by: utterance`` (s3prl's protocol, the default): the speakers of ``train_subset``
are the classes; each speaker's utterances are shuffled with ``split_seed`` and split into
train / dev / test by ``dev_fraction`` and ``test_fraction`` (at least one utterance of every
speaker in each split), so the same speakers appear in every split.

``split_by: subset``: ``train_subset``, ``dev_subset`` and ``test_subset`` as they are; every
dev and test speaker must also be a training speaker.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from upstream.config import dataclass_from_dict
from utility.corpus import Utterance, find_utterances

from .base import ProbeDataset, TaskData
from .corpus_root import resolve_root
from .frames import FrameGrid, resampled_length

SPLIT_MODES = ("utterance", "subset")


@dataclass
class SpeakerDataConfig:
    """The ``data`` section of the speaker tasks."""

    root: Optional[str] = None  # None: the demo corpus in data/demo
    split_by: str = "utterance"
    train_subset: str = "train-clean-100"
    dev_subset: str = "dev-clean"  # split_by: subset only
    test_subset: str = "test-clean"  # split_by: subset only
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 1337

    def __post_init__(self) -> None:
        if self.split_by not in SPLIT_MODES:
            raise ValueError(f"data.split_by must be one of {SPLIT_MODES}, got {self.split_by!r}")
        if not (0 < self.dev_fraction < 1 and 0 < self.test_fraction < 1 and self.dev_fraction + self.test_fraction < 1):
            raise ValueError(
                f"data.dev_fraction ({self.dev_fraction}) and data.test_fraction ({self.test_fraction}) "
                "must each be in (0, 1) and sum to less than 1"
            )


@dataclass
class SpeakerSplits:
    train: list[Utterance]
    dev: list[Utterance]
    test: list[Utterance]
    speakers: list[str]  # class index -> speaker id


def _split_utterances(config: SpeakerDataConfig, utterances: list[Utterance]) -> dict[str, list[Utterance]]:
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for utt in utterances:
        by_speaker[utt.speaker].append(utt)
    rng = np.random.default_rng(config.split_seed)
    splits: dict[str, list[Utterance]] = {"train": [], "dev": [], "test": []}
    for speaker in sorted(by_speaker):
        items = by_speaker[speaker]
        if len(items) < 3:
            raise ValueError(
                f"speaker {speaker} has {len(items)} utterance(s) in {config.train_subset}; splitting by "
                "utterance needs at least 3 per speaker (one per split). Remove the speaker or use split_by: subset"
            )
        order = rng.permutation(len(items))
        # At least one utterance per split, and at least one left for training.
        num_dev = int(np.clip(round(len(items) * config.dev_fraction), 1, len(items) - 2))
        num_test = int(np.clip(round(len(items) * config.test_fraction), 1, len(items) - 1 - num_dev))
        splits["dev"] += [items[i] for i in order[:num_dev]]
        splits["test"] += [items[i] for i in order[num_dev : num_dev + num_test]]
        splits["train"] += [items[i] for i in order[num_dev + num_test :]]
    return {name: sorted(items, key=lambda u: u.utt_id) for name, items in splits.items()}


def load_speaker_splits(config: SpeakerDataConfig) -> SpeakerSplits:
    root = resolve_root(config.root)
    if config.split_by == "utterance":
        splits = _split_utterances(config, find_utterances(root, [config.train_subset]))
    else:
        splits = {
            "train": find_utterances(root, [config.train_subset]),
            "dev": find_utterances(root, [config.dev_subset]),
            "test": find_utterances(root, [config.test_subset]),
        }
    speakers = sorted({u.speaker for u in splits["train"]})
    for split in ("dev", "test"):
        unknown = sorted({u.speaker for u in splits[split]} - set(speakers))
        if unknown:
            raise ValueError(
                f"{split} speakers {unknown[:5]} never occur in training ({config.train_subset}); "
                "speaker identification needs the same speakers in every split (use split_by: utterance)"
            )
    return SpeakerSplits(splits["train"], splits["dev"], splits["test"], speakers)


def speaker_dataset(utterances: list[Utterance], speakers: list[str], grid: FrameGrid, per_frame: bool) -> ProbeDataset:
    """Targets: the speaker's class index, () per utterance or repeated on every upstream frame."""
    index = {speaker: i for i, speaker in enumerate(speakers)}
    labels = [torch.tensor(index[u.speaker], dtype=torch.int32) for u in utterances]
    if per_frame:
        counts = grid.num_frames([resampled_length(u.num_samples, u.sample_rate) for u in utterances])
        labels = [label.expand(int(count)).clone() for label, count in zip(labels, counts)]
    classes = [np.array([index[u.speaker]]) for u in utterances]
    return ProbeDataset([u.utt_id for u in utterances], [u.path for u in utterances], labels, classes)


def build_speaker_datasets(config: dict, grid: FrameGrid, per_frame: bool) -> TaskData:
    """``build_datasets`` of the speaker tasks."""
    splits = load_speaker_splits(dataclass_from_dict(SpeakerDataConfig, config, "data"))
    return TaskData(
        *(speaker_dataset(getattr(splits, name), splits.speakers, grid, per_frame) for name in ("train", "dev", "test")),
        label_names=splits.speakers,
    )
