"""LibriSpeech-layout transcripts: ``<speaker>-<chapter>.trans.txt`` files holding
``<utt_id> WORDS`` lines, next to the audio. Words are upper-cased (as s3prl does)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .index import files_under


@dataclass(frozen=True)
class Transcript:
    words: list[str]
    source: Path
    line: int


def read_transcripts(folder: Path) -> dict[str, Transcript]:
    """utt_id -> transcript, from every ``*.trans.txt`` under ``folder``."""
    transcripts: dict[str, Transcript] = {}
    files = files_under(folder, [".trans.txt"])
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
