"""Speaker identification splits: LibriSpeech-layout corpora and VoxCeleb1.

LibriSpeech layout (``format: librispeech``), chosen by ``split_by``:

- ``utterance`` (the default): the speakers of ``train_subset`` are the classes; each
  speaker's utterances are shuffled with ``split_seed`` and split into train / dev / test by
  ``dev_fraction`` and ``test_fraction`` (at least one utterance of every speaker in each
  split), so the same speakers appear in every split. This project's own split.
- ``cpc``: the CPC lists used by s3prl 0.4.18's LibriSpeech speaker tasks (and the AALBERT and
  TERA papers): ``split_dir/train_split.txt`` read with ``readlines()``, shuffled with
  ``random.seed(split_seed)`` (1337), its first ``int(len * 0.9)`` lines train and the rest
  dev; ``split_dir/test_split.txt`` is test. All audio is looked up in ``train_subset``.
  The classes are the speakers of ``train_split.txt`` (the 251 of train-clean-100), in
  s3prl's order (speaker ids sorted as strings).
- ``subset``: ``train_subset``, ``dev_subset`` and ``test_subset`` as they are; every dev and
  test speaker must also be a training speaker.

VoxCeleb1 (``format: voxceleb1``, SUPERB's speaker identification): audio in
``ROOT/wav/<speaker>/<video>/<n>.wav``; ``iden_split.txt`` (in ``split_dir``, default ROOT)
has one ``<part> <speaker>/<video>/<n>.wav`` line per utterance, part 1 train, 2 dev, 3 test.
The speaker is the path's third-from-last part; the classes are the training speakers sorted
(1,251 on the full corpus, in the order of s3prl's ``int(id[2:]) - 10001``). Utterance ids are
``<speaker>-<video>-<n>`` as in s3prl.

A split line naming audio that does not exist, or a dev / test speaker that never occurs in
training, raises naming the file and line.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from utility.typed_config import check_choice

from .index import find_utterances
from .root import resolve_root
from .utterance import Utterance

FORMATS = ("librispeech", "voxceleb1")
SPLIT_MODES = ("utterance", "subset", "cpc")
CPC_LISTS = {"train": "train_split.txt", "test": "test_split.txt"}
VOXCELEB_LIST = "iden_split.txt"
VOXCELEB_PARTS = {"1": "train", "2": "dev", "3": "test"}


@dataclass
class SpeakerDataConfig:
    """The ``data`` section of the speaker tasks (see the module docstring)."""

    root: Optional[str] = None  # None: the demo corpus in data/demo
    format: str = "librispeech"  # or voxceleb1
    split_by: str = "utterance"  # librispeech: utterance, subset or cpc
    split_dir: Optional[str] = None  # cpc: holds train_split.txt / test_split.txt; voxceleb1: iden_split.txt (default ROOT)
    train_subset: str = "train-clean-100"
    dev_subset: str = "dev-clean"  # split_by: subset only
    test_subset: str = "test-clean"  # split_by: subset only
    dev_fraction: float = 0.1  # utterance: per speaker; cpc: share of train_split.txt (s3prl: 0.1)
    test_fraction: float = 0.1  # utterance only
    split_seed: int = 1337

    def __post_init__(self) -> None:
        check_choice("data.format", self.format, FORMATS)
        check_choice("data.split_by", self.split_by, SPLIT_MODES)
        if self.format == "voxceleb1" and self.split_by != "utterance":
            raise ValueError(
                f"data.split_by: {self.split_by} is for LibriSpeech-layout corpora; data.format: voxceleb1 "
                f"always uses {VOXCELEB_LIST} (leave split_by at its default)"
            )
        if self.format == "librispeech" and self.split_by == "cpc" and self.split_dir is None:
            raise ValueError(
                "data.split_by: cpc needs data.split_dir, the folder holding "
                f"{CPC_LISTS['train']} and {CPC_LISTS['test']}"
            )
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


@dataclass(frozen=True)
class ListedUtterance:
    """An utterance named by a split list, and where: for error messages."""

    utterance: Utterance
    source: Path
    line: int


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


def read_list_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text without the newline) for every line, blank ones included, exactly as
    ``open(path).readlines()`` splits the file (s3prl shuffles that list, so its length counts)."""
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path} (check data.split_dir)")
    with open(path) as handle:
        return [(number, line.rstrip("\n")) for number, line in enumerate(handle.readlines(), start=1)]


def _listed(
    lines: list[tuple[int, str]], path: Path, audio: dict[str, Utterance], where: Path, seen: dict[str, str]
) -> list[ListedUtterance]:
    """Split-list lines -> utterances. Blank lines are skipped; an id without audio raises, and
    so does an id listed twice (``seen``: id -> where it was first listed, shared by the lists
    of one split set)."""
    listed: list[ListedUtterance] = []
    for number, text in lines:
        utt_id = text.strip()
        if not utt_id:
            continue
        if utt_id not in audio:
            raise FileNotFoundError(f"{path}:{number}: utterance {utt_id} has no audio under {where}; check data.root")
        if utt_id in seen:
            raise ValueError(f"{path}:{number}: utterance {utt_id} is listed again (first at {seen[utt_id]})")
        seen[utt_id] = f"{path}:{number}"
        listed.append(ListedUtterance(audio[utt_id], path, number))
    return listed


def _classes_and_splits(listed: dict[str, list[ListedUtterance]], class_splits: tuple[str, ...] = ("train",)) -> SpeakerSplits:
    """The speakers of ``class_splits`` are the classes (sorted as strings, as s3prl sorts
    them); a speaker of another split outside them raises, naming the list and line."""
    speakers = sorted({item.utterance.speaker for split in class_splits for item in listed[split]})
    known = set(speakers)
    for split in sorted(set(listed) - set(class_splits)):
        for item in listed[split]:
            if item.utterance.speaker not in known:
                raise ValueError(
                    f"{item.source}:{item.line}: speaker {item.utterance.speaker} of {split} utterance "
                    f"{item.utterance.utt_id} is not among the {len(speakers)} speakers of the "
                    f"{' and '.join(class_splits)} split; speaker identification only knows those"
                )
    return SpeakerSplits(*([item.utterance for item in listed[s]] for s in ("train", "dev", "test")), speakers)


def _cpc_splits(config: SpeakerDataConfig, root: Path) -> SpeakerSplits:
    split_dir = Path(config.split_dir)
    train_file, test_file = split_dir / CPC_LISTS["train"], split_dir / CPC_LISTS["test"]
    train_lines, test_lines = read_list_lines(train_file), read_list_lines(test_file)
    # s3prl: random.seed(1337); random.shuffle(lines); cut at int(len * 0.9). The permutation
    # depends only on the list's length, so shuffling (number, text) pairs gives the same order.
    random.Random(config.split_seed).shuffle(train_lines)
    cut = int(len(train_lines) * (1 - config.dev_fraction))
    audio = {u.utt_id: u for u in find_utterances(root, [config.train_subset])}
    where, seen = root / config.train_subset, {}
    parts = {"train": (train_lines[:cut], train_file), "dev": (train_lines[cut:], train_file), "test": (test_lines, test_file)}
    listed = {split: _listed(lines, path, audio, where, seen) for split, (lines, path) in parts.items()}
    return _classes_and_splits(listed, class_splits=("train", "dev"))  # every speaker of train_split.txt


def _voxceleb1_splits(config: SpeakerDataConfig, root: Path) -> SpeakerSplits:
    list_file = (Path(config.split_dir) if config.split_dir is not None else root) / VOXCELEB_LIST
    wav_root = root / "wav"
    audio = {}
    for utt in find_utterances(root, ["wav"]):
        parts = utt.path.relative_to(wav_root).parts  # speaker, video, file
        if len(parts) != 3:
            raise ValueError(f"{utt.path}: VoxCeleb1 audio must sit at ROOT/wav/<speaker>/<video>/<n>.wav")
        name = "-".join([*parts[:2], Path(parts[2]).stem])  # s3prl's utterance name
        audio["/".join(parts)] = dataclasses.replace(utt, utt_id=name, speaker=parts[0], chapter=parts[1])
    listed: dict[str, list[ListedUtterance]] = {"train": [], "dev": [], "test": []}
    seen: dict[str, str] = {}
    for number, text in read_list_lines(list_file):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[0] not in VOXCELEB_PARTS:
            raise ValueError(f"{list_file}:{number}: expected '<1|2|3> <speaker>/<video>/<n>.wav', got {text!r}")
        split = VOXCELEB_PARTS[fields[0]]
        listed[split] += _listed([(number, fields[1])], list_file, audio, wav_root, seen)
    for split, items in listed.items():
        if not items:
            raise ValueError(f"{list_file} lists no {split} utterance")
    return _classes_and_splits(listed)


def load_speaker_splits(config: SpeakerDataConfig) -> SpeakerSplits:
    root = resolve_root(config.root)
    if config.format == "voxceleb1":
        return _voxceleb1_splits(config, root)
    if config.split_by == "cpc":
        return _cpc_splits(config, root)
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
