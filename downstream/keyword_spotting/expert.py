"""Keyword spotting: mean pooling over real frames, then one linear layer over the 12 classes."""

from downstream.heads.utterance import UtteranceClassificationExpert


class DownstreamExpert(UtteranceClassificationExpert):
    """One class per clip; metric: accuracy."""
