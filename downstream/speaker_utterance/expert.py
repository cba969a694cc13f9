"""Utterance-level speaker identification: mean pooling over real frames, then one linear layer."""

from downstream.heads.utterance import UtteranceClassificationExpert


class DownstreamExpert(UtteranceClassificationExpert):
    """One speaker per utterance; metric: utterance accuracy."""
