"""Phone labels at 10 ms for the train / dev / test splits of a LibriSpeech-layout corpus.

Two label formats are read:

- ``frames`` (this project's corpora): ``LABEL_DIR/<subset>.frames.txt`` per subset
  (``utt_id`` then one class index per 10 ms frame; LABEL_DIR defaults to ``ROOT/alignments``)
  and class names in ``ROOT/phones.txt`` (``name index`` per line). The splits are whole
  subsets: ``train_subset``, ``dev_subset``, ``test_subset``.
- ``s3prl`` (the CPC split of train-clean-100 used by s3prl): ``LABEL_DIR`` holds
  ``converted_aligned_phones.txt`` (same line format, 41 classes), ``train_split.txt`` and
  ``test_split.txt`` (one utterance id per line). The train list is shuffled with
  ``random.Random(split_seed)`` (1337) and its first 90 % train, the rest dev, exactly as
  s3prl does. All audio is looked up in ``train_subset``. Class names come from
  ``LABEL_DIR/phones.txt`` when there is one, else they are the class indices.

Every utterance of a split must have labels, and every label must be a known class.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from utility.typed_config import check_choice

from .index import find_utterances
from .label_frames import read_frame_labels
from .root import resolve_root
from .utterance import Utterance

S3PRL_LABELS = "converted_aligned_phones.txt"
S3PRL_SPLITS = {"train": "train_split.txt", "test": "test_split.txt"}
S3PRL_NUM_CLASSES = 41
FORMATS = ("frames", "s3prl")
# Where frame labels come from: forced alignments (Montreal Forced Aligner or Kaldi) converted.
ALIGNMENTS_HINT = (
    "make the 10 ms labels from forced alignments with python -m corpora.alignments "
    "(downstream/README.md, 'Phone labels from a forced aligner')"
)


@dataclass
class PhoneDataConfig:
    """The ``data`` section of the phone tasks (see the module docstring for the formats)."""

    root: Optional[str] = None  # None: the demo corpus in data/demo
    format: str = "frames"
    label_dir: Optional[str] = None  # frames: default ROOT/alignments; s3prl: required
    phones: Optional[str] = None  # class names file; default ROOT/phones.txt (s3prl: LABEL_DIR/phones.txt) when present
    num_classes: Optional[int] = None  # default: the names file's size, or 41 for s3prl
    train_subset: str = "train-clean-100"
    dev_subset: str = "dev-clean"  # frames format only
    test_subset: str = "test-clean"  # frames format only
    dev_fraction: float = 0.1  # s3prl format: share of train_split.txt held out for dev
    split_seed: int = 1337

    def __post_init__(self) -> None:
        check_choice("data.format", self.format, FORMATS)
        if self.format == "s3prl" and self.label_dir is None:
            raise ValueError(
                f"data.format 's3prl' needs data.label_dir: the folder holding {S3PRL_LABELS}, "
                f"{S3PRL_SPLITS['train']} and {S3PRL_SPLITS['test']}"
            )
        if not 0 < self.dev_fraction < 1:
            raise ValueError(f"data.dev_fraction must be in (0, 1), got {self.dev_fraction}")


@dataclass
class LabelledUtterance:
    utterance: Utterance
    labels: torch.Tensor  # (T,) int64 class index per 10 ms frame


@dataclass
class PhoneSplits:
    train: list[LabelledUtterance]
    dev: list[LabelledUtterance]
    test: list[LabelledUtterance]
    phone_names: list[str]


def read_phone_names(path: Path) -> list[str]:
    """``name index`` lines -> names ordered by index (indices must be 0 .. K-1)."""
    entries = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{path}:{number}: expected 'name index', got {line!r}")
        entries[int(parts[1])] = parts[0]
    if sorted(entries) != list(range(len(entries))):
        raise ValueError(f"{path}: class indices must be 0 .. {len(entries) - 1} without gaps")
    return [entries[i] for i in range(len(entries))]


def _class_names(config: PhoneDataConfig, root: Path) -> list[str]:
    if config.phones is not None:
        names_file = Path(config.phones)
    else:
        names_file = (Path(config.label_dir) if config.format == "s3prl" else root) / "phones.txt"
    if config.phones is not None and not names_file.is_file():
        raise FileNotFoundError(f"phone names file not found: {names_file} (data.phones)")
    names = read_phone_names(names_file) if names_file.is_file() else None
    count = config.num_classes
    if count is None:
        if names is None:
            if config.format != "s3prl":
                raise ValueError(
                    f"no phone list {names_file}: the phone tasks read labels from forced alignments of {root}; "
                    f"{ALIGNMENTS_HINT} and put its --phones list there (or set data.phones, or data.num_classes)"
                )
            count = S3PRL_NUM_CLASSES
        else:
            count = len(names)
    if names is None:
        return [str(i) for i in range(count)]
    if len(names) != count:
        raise ValueError(f"{names_file} names {len(names)} classes but data.num_classes is {count}")
    return names


def _attach_labels(
    utterances: list[Utterance], labels: dict[str, list[int]], source: Path, num_classes: int
) -> list[LabelledUtterance]:
    result = []
    for utt in utterances:
        if utt.utt_id not in labels:
            raise ValueError(
                f"utterance {utt.utt_id} ({utt.path}) has no labels in {source}; "
                "remove the audio or add its labels"
            )
        values = torch.tensor(labels[utt.utt_id], dtype=torch.long)
        if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_classes):
            raise ValueError(
                f"utterance {utt.utt_id} in {source} has labels outside 0 .. {num_classes - 1} "
                f"(min {int(values.min())}, max {int(values.max())}); check data.num_classes"
            )
        result.append(LabelledUtterance(utt, values))
    return result


def _frames_format(config: PhoneDataConfig, root: Path) -> tuple[dict[str, list[LabelledUtterance]], list[str]]:
    label_dir = Path(config.label_dir) if config.label_dir is not None else root / "alignments"
    subsets = {"train": config.train_subset, "dev": config.dev_subset, "test": config.test_subset}
    # Audio first: a corpus without audio is named as such, not as a missing label file.
    found = {split: find_utterances(root, [subset]) for split, subset in subsets.items()}
    names = _class_names(config, root)
    splits = {}
    for split, utterances in found.items():
        label_file = label_dir / f"{subsets[split]}.frames.txt"
        if not label_file.is_file():
            raise FileNotFoundError(
                f"no phone labels for {subsets[split]}: {label_file} not found; {ALIGNMENTS_HINT} (or set data.label_dir)"
            )
        labels = read_frame_labels(label_file, (u.utt_id for u in utterances))
        splits[split] = _attach_labels(utterances, labels, label_file, len(names))
    return splits, names


def _read_id_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path} (data.label_dir must hold {sorted(S3PRL_SPLITS.values())})")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _s3prl_format(config: PhoneDataConfig, root: Path) -> tuple[dict[str, list[LabelledUtterance]], list[str]]:
    names = _class_names(config, root)
    num_classes = len(names)
    label_dir = Path(config.label_dir)
    label_file = label_dir / S3PRL_LABELS
    train_ids = _read_id_list(label_dir / S3PRL_SPLITS["train"])
    test_ids = _read_id_list(label_dir / S3PRL_SPLITS["test"])
    # s3prl: random.seed(1337); random.shuffle(train list); first 90 % train, the rest dev.
    random.Random(config.split_seed).shuffle(train_ids)
    cut = int(len(train_ids) * (1 - config.dev_fraction))
    wanted = {"train": train_ids[:cut], "dev": train_ids[cut:], "test": test_ids}
    by_id = {u.utt_id: u for u in find_utterances(root, [config.train_subset])}
    labels = read_frame_labels(label_file, set(train_ids) | set(test_ids))
    splits = {}
    for split, ids in wanted.items():
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} utterance(s) of the s3prl {split} list have no audio under "
                f"{root / config.train_subset} (first: {missing[0]}); check data.root and data.train_subset"
            )
        splits[split] = _attach_labels([by_id[i] for i in ids], labels, label_file, num_classes)
    return splits, names


def load_phone_splits(config: PhoneDataConfig) -> PhoneSplits:
    root = resolve_root(config.root)
    reader = _s3prl_format if config.format == "s3prl" else _frames_format
    splits, names = reader(config, root)
    for split, items in splits.items():
        if not items:
            raise ValueError(f"the {split} split of {root} is empty")
    return PhoneSplits(splits["train"], splits["dev"], splits["test"], names)
