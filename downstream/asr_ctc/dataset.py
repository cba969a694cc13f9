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

from corpora.index import find_utterances
from corpora.label_frames import resampled_length
from corpora.root import resolve_root
from corpora.transcripts import Transcript, read_transcripts
from corpora.utterance import Utterance
from downstream.base import ProbeDataset, TaskData
from downstream.frames import FrameGrid
from downstream.heads.ctc import ctc_frames_needed

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


def build_datasets(cfg: DataConfig, grid: FrameGrid) -> TaskData:
    root = resolve_root(cfg.root)
    names = [WORD_BOUNDARY, *cfg.characters]
    index = {name: i for i, name in enumerate(names)}
    subsets = dict(zip(SPLITS, (cfg.train_subset, cfg.dev_subset, cfg.test_subset)))
    datasets = [transcribed_dataset(find_utterances(root, [subsets[s]]), root / subsets[s], index, grid) for s in SPLITS]
    return TaskData(*datasets, label_names=names)
