"""Frame-level phone classification with a linear probe."""

from downstream.frame_classifier import FrameClassificationExpert


class DownstreamExpert(FrameClassificationExpert):
    """One linear layer on every frame (``expert.hidden_sizes: []``)."""
