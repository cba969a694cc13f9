"""Keyword spotting: mean pooling over real frames, then one linear layer over the 12 classes."""

from downstream.utterance_classifier import UtteranceClassificationExpert


class DownstreamExpert(UtteranceClassificationExpert):
    """One class per clip; metric: accuracy."""
