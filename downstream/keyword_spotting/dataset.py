"""Keyword spotting on Speech Commands v0.01 (its reader: ``corpora.speech_commands``) with
SUPERB's keyword spotting protocol (s3prl downstream/speech_commands).

The classes, splits and ``_silence_`` slices are the corpus reader's (see there).

Training is class-balanced (``data.balance_train``): every class's clips are repeated to
about the count of the largest class, the deterministic counterpart of s3prl's
``WeightedRandomSampler`` with weights ``len(data) / count[class]``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import soundfile
import torch

from corpora.speech_commands import CLASSES, NOISE, SILENCE, SLICE, CommandsSplit, class_of, speech_commands_splits
from downstream.base import ProbeDataset, TaskData
from downstream.frames import FrameGrid
from upstream.audio import SAMPLE_RATE


@dataclass
class DataConfig:
    """The ``data`` section of ``keyword_spotting``."""

    root: Optional[str] = None  # required: the Speech Commands v0.01 folder (word folders, lists, _background_noise_)
    test_root: Optional[str] = None  # a separate test folder (SUPERB: speech_commands_test_set_v0.01); None: testing_list.txt
    balance_train: bool = True  # repeat each class's training clips to equal counts (SUPERB samples class-balanced)


class KeywordDataset(ProbeDataset):
    """Clips (source: a path) and noise slices (source: (path, first sample)), one class each.

    With ``balance``, index i of the dataset is item ``order[i]``, each item repeated so that
    every class has about as many entries as the largest; ``classes`` and ``subset`` still
    count each clip once (training proportions are drawn over clips).
    """

    def __init__(self, utt_ids: Sequence[str], sources: Sequence[Any], labels: Sequence[int], balance: bool = False):
        super().__init__(utt_ids, sources, [torch.tensor(c, dtype=torch.int32) for c in labels], [np.array([c]) for c in labels])
        self.balance = balance
        self.order = self.balanced_order()

    def balanced_order(self) -> list[int]:
        if not self.balance:
            return list(range(len(self.utt_ids)))
        counts = Counter(int(c[0]) for c in self.classes)
        most = max(counts.values())
        return [i for i, c in enumerate(self.classes) for _ in range(round(most / counts[int(c[0])]))]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int):
        return super().__getitem__(self.order[index])

    def subset(self, indices: Sequence[int]) -> "KeywordDataset":
        part = super().subset(indices)
        part.order = part.balanced_order()
        return part

    def load_wav(self, source: Any) -> torch.Tensor:
        if not isinstance(source, tuple):
            return super().load_wav(source)
        path, start = source
        data, rate = soundfile.read(str(path), start=start, stop=start + SLICE, dtype="float32", always_2d=True)
        if rate != SAMPLE_RATE or data.shape[1] != 1:
            raise ValueError(f"{path}: background noise must be 16 kHz mono, got {rate} Hz, {data.shape[1]} channel(s)")
        return torch.from_numpy(data[:, 0].copy())


def _dataset(split: CommandsSplit, balance: bool) -> KeywordDataset:
    ids = [c.relative_to(split.root).as_posix() for c in split.clips]
    ids += [f"{NOISE}/{path.stem}#{start // SLICE}" for path, start in split.slices]
    labels = [class_of(c.parent.name) for c in split.clips] + [CLASSES.index(SILENCE)] * len(split.slices)
    return KeywordDataset(ids, [*split.clips, *split.slices], labels, balance)


def build_datasets(cfg: DataConfig, grid: FrameGrid) -> TaskData:
    splits = speech_commands_splits(cfg.root, cfg.test_root)
    return TaskData(
        *(_dataset(split, cfg.balance_train and split.name == "train") for split in splits),
        label_names=list(CLASSES),
    )
