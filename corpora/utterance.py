"""One audio file of a corpus, as the corpus index describes it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class Utterance:
    """One audio file of a corpus. ``num_samples`` at the file's own ``sample_rate``."""

    utt_id: str
    path: Path
    subset: str
    speaker: str
    chapter: str
    num_samples: int
    sample_rate: int
    problem: Optional[str] = None  # why the audio is unusable (unreadable, empty, ...), or None

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate
