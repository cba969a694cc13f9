"""Speech Commands v0.01 with SUPERB's keyword spotting protocol (s3prl downstream/speech_commands).

Twelve classes: the ten words ``yes no up down left right on off stop go``, ``_unknown_`` (every
other word folder) and ``_silence_`` (one-second slices of ``_background_noise_``).

- dev: the clips listed in ``ROOT/validation_list.txt``; test: those in ``testing_list.txt``,
  or, with ``data.test_root``, every clip of a separate test folder (SUPERB uses the v0.01 test
  set, whose folders are the twelve classes); train: every other clip of ``ROOT``.
- ``_silence_``: each noise file is cut into consecutive one-second slices; slice k goes to dev
  when k % 10 == 8, to test when k % 10 == 9 (unless ``test_root`` is given, whose own
  ``_silence_`` folder is used), else to train. Fixed slices keep dev and test deterministic
  (s3prl draws a random second of each noise file at every visit).
- Training is class-balanced (``data.balance_train``): every class's clips are repeated to
  about the count of the largest class, the deterministic counterpart of s3prl's
  ``WeightedRandomSampler`` with weights ``len(data) / count[class]``.

A list line naming a clip that does not exist raises, naming the list and line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import soundfile
import torch

from downstream.base import ProbeDataset, TaskData
from downstream.frames import FrameGrid
from upstream.audio import SAMPLE_RATE
from utility.typed_config import dataclass_from_dict

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
CLASSES = (*WORDS, UNKNOWN, SILENCE)  # s3prl's order
NOISE = "_background_noise_"
LISTS = {"dev": "validation_list.txt", "test": "testing_list.txt"}
SLICE = SAMPLE_RATE  # one second
SLICE_SPLIT = {8: "dev", 9: "test"}  # slice k % 10 -> split; the rest train


@dataclass
class DataConfig:
    """The ``data`` section of ``keyword_spotting``."""

    root: Optional[str] = None  # required: the Speech Commands v0.01 folder (word folders, lists, _background_noise_)
    test_root: Optional[str] = None  # a separate test folder (SUPERB: speech_commands_test_set_v0.01); None: testing_list.txt
    balance_train: bool = True  # repeat each class's training clips to equal counts (SUPERB samples class-balanced)


def class_of(folder: str) -> int:
    """Folder name -> class index: a keyword, ``_silence_``, or ``_unknown_`` for anything else."""
    return CLASSES.index(folder) if folder in CLASSES else CLASSES.index(UNKNOWN)


class KeywordDataset(ProbeDataset):
    """Clips (source: a path) and noise slices (source: (path, first sample)), one class each.

    With ``balance``, index i of the dataset is item ``order[i]``, each item repeated so that
    every class has about as many entries as the largest; ``classes`` and ``subset`` still
    count each clip once (training proportions are drawn over clips).
    """

    def __init__(self, utt_ids: Sequence[str], sources: Sequence[Any], labels: Sequence[int], balance: bool = False):
        super().__init__(
            utt_ids, sources, [torch.tensor(c, dtype=torch.int32) for c in labels], [np.array([c]) for c in labels]
        )
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


def _clip_id(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _read_list(root: Path, name: str) -> list[Path]:
    """The clips of a validation / testing list (``word/file.wav`` lines)."""
    list_file = root / name
    if not list_file.is_file():
        raise FileNotFoundError(f"{list_file} not found; data.root must be the Speech Commands v0.01 folder")
    clips = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        clip = root / line.strip()
        if not clip.is_file():
            raise FileNotFoundError(f"{list_file}:{number}: {line.strip()} does not exist under {root}")
        clips.append(clip)
    return clips


def noise_slices(root: Path) -> dict[str, list[tuple[Path, int]]]:
    """Split -> (noise file, first sample) of its one-second slices."""
    folder = root / NOISE
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"no {NOISE}/*.wav under {root}: _silence_ is cut from them")
    slices: dict[str, list[tuple[Path, int]]] = {"train": [], "dev": [], "test": []}
    for path in files:
        for k in range(soundfile.info(str(path)).frames // SLICE):
            slices[SLICE_SPLIT.get(k % 10, "train")].append((path, k * SLICE))
    return slices


def _dataset(clips: list[Path], root: Path, slices: list[tuple[Path, int]], balance: bool = False) -> KeywordDataset:
    ids = [_clip_id(c, root) for c in clips] + [f"{NOISE}/{path.stem}#{start // SLICE}" for path, start in slices]
    labels = [class_of(c.parent.name) for c in clips] + [CLASSES.index(SILENCE)] * len(slices)
    return KeywordDataset(ids, [*clips, *slices], labels, balance)


def build_datasets(config: dict, grid: FrameGrid) -> TaskData:
    cfg = dataclass_from_dict(DataConfig, config, "data")
    if cfg.root is None:  # checked here, not in DataConfig: its defaults must build
        raise ValueError(
            "data.root must name the Speech Commands v0.01 folder (word folders, validation_list.txt, "
            "testing_list.txt, _background_noise_), e.g. -o data.root=/data/speech_commands_v0.01"
        )
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Speech Commands folder not found: {root} (data.root)")
    listed = {split: _read_list(root, name) for split, name in LISTS.items()}
    held_out = {clip for clips in listed.values() for clip in clips}
    train = sorted(c for c in root.glob("*/*.wav") if c.parent.name != NOISE and c not in held_out)
    slices = noise_slices(root)
    if cfg.test_root is None:
        test = _dataset(listed["test"], root, slices["test"])
    else:
        test_root = Path(cfg.test_root).expanduser()
        clips = sorted(test_root.glob("*/*.wav"))
        if not clips:
            raise FileNotFoundError(f"no <class>/*.wav clips under {test_root} (data.test_root)")
        test = _dataset(clips, test_root, [])
    return TaskData(
        _dataset(train, root, slices["train"], cfg.balance_train),
        _dataset(listed["dev"], root, slices["dev"]),
        test,
        label_names=list(CLASSES),
    )
