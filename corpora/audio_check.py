"""Audio a run cannot use, found once, when its corpus is indexed, before the first update.

:func:`inspect_audio` reads a whole file once; ``corpora.index`` caches what it finds beside
each file's length in the corpus index. A problem of the file itself is one of: unreadable
(header or data), empty, truncated, not mono, NaN or inf samples. Too short for one frame
depends on the model, so it is decided by the :class:`AudioScreen` a runner applies: it
either leaves every unusable file out with one warning that names and counts them
(``skip``), or stops, naming them (``stop``). Both runners take the choice from a setting
called ``on_unreadable`` (pretraining: ``corpus.on_unreadable``, probing:
``runner.on_unreadable``).

The probing runner does not index its corpus itself (each task does, through
``find_utterances``), so it makes its screen the active one while the task builds its
datasets::

    with screening(AudioScreen("skip", upstream.min_samples, "runner.on_unreadable")):
        data = task.build_datasets(config, grid)
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import soundfile

from upstream.audio import SAMPLE_RATE
from utility.typed_config import check_choice

from .utterance import Utterance

ACTIONS = ("skip", "stop")
_BLOCK = SAMPLE_RATE * 60  # samples read at a time: long files never sit in memory whole


def inspect_audio(path: Path) -> tuple[int, int, int, Optional[str]]:
    """(samples, sample rate, channels, problem or None) of an audio file, reading all of it.
    An unreadable header gives (0, 0, 0, problem)."""
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError) as error:
        return 0, 0, 0, f"unreadable ({error})"
    frames, rate, channels = info.frames, info.samplerate, info.channels
    if channels != 1:
        return frames, rate, channels, f"{channels} channels, expected mono"
    if frames == 0:
        return frames, rate, channels, "empty (no samples)"
    read, non_finite = 0, 0
    try:
        for block in soundfile.blocks(str(path), blocksize=_BLOCK, dtype="float32"):
            read += len(block)
            non_finite += int((~np.isfinite(block)).sum())
    except (soundfile.LibsndfileError, RuntimeError) as error:
        return frames, rate, channels, f"unreadable audio data ({error})"
    if read < frames:
        return frames, rate, channels, f"truncated (its header promises {frames} samples, {read} are there)"
    if non_finite:
        return frames, rate, channels, f"{non_finite} NaN or inf samples"
    return frames, rate, channels, None


@dataclass(frozen=True)
class AudioScreen:
    """What a runner does with audio it cannot use.

    Attributes:
        action: ``skip`` or ``stop``.
        min_samples: the shortest usable waveform at 16 kHz (one frame of the model).
        setting: the setting that chose ``action``, named in messages.
    """

    action: str
    min_samples: int
    setting: str

    def __post_init__(self) -> None:
        check_choice(self.setting, self.action, ACTIONS)

    def problem(self, utterance: Utterance) -> Optional[str]:
        if utterance.problem is not None:
            return utterance.problem
        samples = math.ceil(utterance.num_samples * SAMPLE_RATE / utterance.sample_rate)  # as read_audio resamples
        if samples < self.min_samples:
            return f"{samples} samples at 16 kHz, shorter than one frame ({self.min_samples})"
        return None

    def apply(self, utterances: Sequence[Utterance], where: str) -> list[Utterance]:
        """The usable ``utterances``; the others are left out with a warning, or raise."""
        bad = [(u, problem) for u in utterances if (problem := self.problem(u)) is not None]
        if not bad:
            return list(utterances)
        listing = "; ".join(f"{u.path}: {problem}" for u, problem in bad)
        if self.action == "stop":
            raise ValueError(
                f"{len(bad)} unusable audio file(s) in {where}: {listing}; fix or remove them, "
                f"or set {self.setting}=skip to leave such files out"
            )
        warnings.warn(f"{self.setting}=skip: left out {len(bad)} unusable audio file(s) of {where}: {listing}", stacklevel=3)
        unusable = {id(u) for u, _ in bad}
        return [u for u in utterances if id(u) not in unusable]


_ACTIVE: contextvars.ContextVar[Optional[AudioScreen]] = contextvars.ContextVar("audio_screen", default=None)


@contextlib.contextmanager
def screening(screen: AudioScreen) -> Iterator[None]:
    """Within the block, ``find_utterances`` applies ``screen`` unless given its own."""
    token = _ACTIVE.set(screen)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_screen() -> Optional[AudioScreen]:
    return _ACTIVE.get()
