"""Character targets from LibriSpeech-layout transcripts: ``<speaker>-<chapter>.trans.txt``
files holding ``<utt_id> WORDS`` lines, next to the audio.

Each transcript is upper-cased (as s3prl does) and spelled as characters with ``|`` between
words (``THE CAT`` -> ``T H E | C A T``). The classes are ``|`` then ``data.characters``.
Every utterance of a subset needs exactly one non-empty transcript line, every transcript line
needs its audio, and every character must be in the vocabulary; otherwise the error names
the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from downstream.base import ProbeDataset, TaskData
from downstream.corpus_root import resolve_root
from downstream.frames import FrameGrid, resampled_length
from downstream.phone_ctc.dataset import ctc_frames_needed
from utility.typed_config import dataclass_from_dict
from utility.corpus import Utterance, find_utterances

WORD_BOUNDARY = "|"
SPLITS = ("train", "dev", "test")


@dataclass
class DataConfig:
    """The ``data`` section of ``asr_ctc``."""

    root: Optional[str] = None  # LibriSpeech-layout root; None: the demo corpus in data/demo
    train_subset: str = "train-clean-100"
    dev_subset: str = "dev-clean"
    test_subset: str = "test-clean"
    characters: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"  # LibriSpeech's; the word boundary | comes first

    def __post_init__(self) -> None:
        if WORD_BOUNDARY in self.characters or len(set(self.characters)) != len(self.characters) or not self.characters:
            raise ValueError(
                f"data.characters must list distinct characters without {WORD_BOUNDARY!r} (the word "
                f"boundary, always class 0), got {self.characters!r}"
            )


@dataclass(frozen=True)
class Transcript:
    words: list[str]
    source: Path
    line: int


def read_transcripts(folder: Path) -> dict[str, Transcript]:
    """utt_id -> transcript, from every ``*.trans.txt`` under ``folder``."""
    transcripts: dict[str, Transcript] = {}
    files = sorted(folder.rglob("*.trans.txt"))
    if not files:
        raise FileNotFoundError(f"no *.trans.txt transcripts under {folder}")
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            utt_id, *words = line.split()
            if not words:
                raise ValueError(f"{path}:{number}: the transcript of {utt_id} is empty")
            if utt_id in transcripts:
                first = transcripts[utt_id]
                raise ValueError(f"{path}:{number}: {utt_id} has a transcript already ({first.source}:{first.line})")
            transcripts[utt_id] = Transcript([w.upper() for w in words], path, number)
    return transcripts


def spell(transcript: Transcript, index: dict[str, int]) -> torch.Tensor:
    """(L,) class indices: the words' characters with the word boundary between words."""
    text = WORD_BOUNDARY.join(transcript.words)
    unknown = sorted(set(text) - set(index))
    if unknown:
        raise ValueError(
            f"{transcript.source}:{transcript.line}: characters {unknown} are not in data.characters; "
            "add them, or normalise the transcript"
        )
    return torch.tensor([index[c] for c in text], dtype=torch.int32)


def transcribed_dataset(utterances: list[Utterance], folder: Path, index: dict[str, int], grid: FrameGrid) -> ProbeDataset:
    transcripts = read_transcripts(folder)
    audio = {u.utt_id for u in utterances}
    for utt_id, transcript in transcripts.items():
        if utt_id not in audio:
            raise FileNotFoundError(f"{transcript.source}:{transcript.line}: {utt_id} has no audio file under {folder}")
    missing = [u for u in utterances if u.utt_id not in transcripts]
    if missing:
        raise ValueError(f"{missing[0].path} has no line in any *.trans.txt under {folder} ({len(missing)} such files)")
    targets = [spell(transcripts[u.utt_id], index) for u in utterances]
    frames = grid.num_frames([resampled_length(u.num_samples, u.sample_rate) for u in utterances]).tolist()
    for utt, target, count in zip(utterances, targets, frames):
        if ctc_frames_needed(target) > count:
            raise ValueError(
                f"utterance {utt.utt_id}: {target.numel()} characters need at least {ctc_frames_needed(target)} "
                f"frames for CTC, but the upstream gives {count}"
            )
    return ProbeDataset(
        [u.utt_id for u in utterances], [u.path for u in utterances], targets, [t.unique().numpy() for t in targets]
    )


def build_datasets(config: dict, grid: FrameGrid) -> TaskData:
    cfg = dataclass_from_dict(DataConfig, config, "data")
    root = resolve_root(cfg.root)
    names = [WORD_BOUNDARY, *cfg.characters]
    index = {name: i for i, name in enumerate(names)}
    subsets = dict(zip(SPLITS, (cfg.train_subset, cfg.dev_subset, cfg.test_subset)))
    datasets = [transcribed_dataset(find_utterances(root, [subsets[s]]), root / subsets[s], index, grid) for s in SPLITS]
    return TaskData(*datasets, label_names=names)
