"""The speaker's label on every upstream frame (splits: corpora/speaker_splits.py)."""

from corpora.speaker_splits import SpeakerDataConfig as DataConfig
from downstream.frames import FrameGrid
from downstream.speaker_datasets import build_speaker_datasets


def build_datasets(config: DataConfig, grid: FrameGrid):
    return build_speaker_datasets(config, grid, per_frame=True)
