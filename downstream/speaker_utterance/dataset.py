"""One speaker label per utterance (splits: downstream/speaker_labels.py)."""

from downstream.frames import FrameGrid
from downstream.speaker_labels import SpeakerDataConfig as DataConfig  # noqa: F401
from downstream.speaker_labels import build_speaker_datasets


def build_datasets(config: dict, grid: FrameGrid):
    return build_speaker_datasets(config, grid, per_frame=False)
