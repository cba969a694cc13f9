"""Speech Commands v0.01 (the corpus side: classes, lists, noise slices) with SUPERB's keyword
spotting protocol (s3prl downstream/speech_commands).

Twelve classes: the ten words ``yes no up down left right on off stop go``, ``_unknown_`` (every
other word folder) and ``_silence_`` (one-second slices of ``_background_noise_``).

- dev: the clips listed in ``ROOT/validation_list.txt``; test: those in ``testing_list.txt``,
  or, with ``data.test_root``, every clip of a separate test folder (SUPERB uses the v0.01 test
  set, whose folders are the twelve classes); train: every other clip of ``ROOT``.
- ``_silence_``: each noise file is cut into consecutive one-second slices; slice k goes to dev
  when k % 10 == 8, to test when k % 10 == 9 (unless ``test_root`` is given, whose own
  ``_silence_`` folder is used), else to train. Fixed slices keep dev and test deterministic
  (s3prl draws a random second of each noise file at every visit).

A list line naming a clip that does not exist raises, naming the list and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import soundfile

from upstream.audio import SAMPLE_RATE

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
CLASSES = (*WORDS, UNKNOWN, SILENCE)  # s3prl's order
NOISE = "_background_noise_"
LISTS = {"dev": "validation_list.txt", "test": "testing_list.txt"}
SLICE = SAMPLE_RATE  # one second
SLICE_SPLIT = {8: "dev", 9: "test"}  # slice k % 10 -> split; the rest train


def class_of(folder: str) -> int:
    """Folder name -> class index: a keyword, ``_silence_``, or ``_unknown_`` for anything else."""
    return CLASSES.index(folder) if folder in CLASSES else CLASSES.index(UNKNOWN)


def read_list(root: Path, name: str) -> list[Path]:
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


@dataclass(frozen=True)
class CommandsSplit:
    """One split: clips (``root/<word>/<file>.wav``) and one-second noise slices (file, first sample)."""

    name: str
    root: Path
    clips: list[Path]
    slices: list[tuple[Path, int]]


def speech_commands_splits(root: Optional[str], test_root: Optional[str] = None) -> list[CommandsSplit]:
    """Train, dev and test of a Speech Commands v0.01 folder (see the module docstring)."""
    if root is None:  # checked here, not in the task's DataConfig: its defaults must build
        raise ValueError(
            "data.root must name the Speech Commands v0.01 folder (word folders, validation_list.txt, "
            "testing_list.txt, _background_noise_), e.g. -o data.root=/data/speech_commands_v0.01"
        )
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"Speech Commands folder not found: {folder} (data.root)")
    listed = {split: read_list(folder, name) for split, name in LISTS.items()}
    held_out = {clip for clips in listed.values() for clip in clips}
    train = sorted(c for c in folder.glob("*/*.wav") if c.parent.name != NOISE and c not in held_out)
    slices = noise_slices(folder)
    test = CommandsSplit("test", folder, listed["test"], slices["test"])
    if test_root is not None:
        test_folder = Path(test_root).expanduser()
        clips = sorted(test_folder.glob("*/*.wav"))
        if not clips:
            raise FileNotFoundError(f"no <class>/*.wav clips under {test_folder} (data.test_root)")
        test = CommandsSplit("test", test_folder, clips, [])
    return [
        CommandsSplit("train", folder, train, slices["train"]),
        CommandsSplit("dev", folder, listed["dev"], slices["dev"]),
        test,
    ]
