"""Template dataset: synthetic tone bursts in noise, no corpus needed.

``build_datasets(config, grid)`` is the one function the runner calls. It receives only the
``data`` section of config.yaml, typed by ``DataConfig`` (every key's default is there), and
the upstream's ``FrameGrid``, and returns a ``TaskData``
(train / dev / test ``ProbeDataset`` s and the class names).

Here every utterance is noise with one tone burst; the target is a label per 10 ms frame
(1 while the tone sounds), mapped to the upstream's frames with ``grid.align`` (the rule
every frame-level task uses: the label at each frame's centre).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from corpora.label_frames import LABEL_HOP
from downstream.base import ProbeDataset, TaskData
from downstream.frames import FrameGrid
from upstream.audio import SAMPLE_RATE


@dataclass
class DataConfig:
    """The ``data`` section: a typed dataclass, so an unknown key fails with a clear message."""

    train_utterances: int = 32
    dev_utterances: int = 8
    test_utterances: int = 8
    seconds: float = 1.0
    seed: int = 0


class ToneDataset(ProbeDataset):
    """Waveforms are made on the fly from a per-utterance seed (the ``source``) instead of
    being read from files: overriding ``load_wav`` is all it takes."""

    def __init__(self, seeds: list[int], config: DataConfig, grid: FrameGrid):
        self.config = config
        self.num_samples = round(config.seconds * SAMPLE_RATE)
        targets = []
        for seed in seeds:
            labels = torch.from_numpy(self.tone_labels(seed))  # (T,) one per 10 ms
            targets.append(grid.align(labels, self.num_samples, f"tone-{seed}"))
        super().__init__(
            [f"tone-{seed}" for seed in seeds], seeds, targets, [t.unique().numpy() for t in targets]
        )

    def tone_span(self, seed: int) -> tuple[int, int, float]:
        """Start and end sample of the burst, and its frequency (Hz)."""
        rng = np.random.default_rng(seed)
        start = int(rng.integers(0, self.num_samples // 2))
        end = int(rng.integers(start + self.num_samples // 8, self.num_samples))
        return start, end, float(rng.uniform(300.0, 3000.0))

    def tone_labels(self, seed: int) -> np.ndarray:
        """(ceil(samples / 160),) 1 where the tone sounds at the frame's 5 ms point."""
        start, end, _ = self.tone_span(seed)
        probe = np.arange(math.ceil(self.num_samples / LABEL_HOP)) * LABEL_HOP + LABEL_HOP // 2
        return ((probe >= start) & (probe < end)).astype(np.int64)

    def load_wav(self, seed: int) -> torch.Tensor:
        start, end, frequency = self.tone_span(seed)
        sample = np.arange(self.num_samples)
        noise = np.random.default_rng(seed + 1).normal(0.0, 0.05, self.num_samples)
        tone = np.where((sample >= start) & (sample < end), 0.3 * np.sin(2 * np.pi * frequency * sample / SAMPLE_RATE), 0.0)
        return torch.from_numpy((noise + tone).astype(np.float32))


def build_datasets(cfg: DataConfig, grid: FrameGrid) -> TaskData:
    counts = [cfg.train_utterances, cfg.dev_utterances, cfg.test_utterances]
    # Each split draws its utterances from its own range of seeds.
    splits = [ToneDataset([cfg.seed * 1_000_000 + k * 100_000 + i for i in range(n)], cfg, grid) for k, n in enumerate(counts)]
    return TaskData(*splits, label_names=["-", "tone"])
