"""Frame-level phone classification with a linear probe."""

from downstream.heads.frame import FrameClassificationExpert


class DownstreamExpert(FrameClassificationExpert):
    """One linear layer on every frame (``expert.hidden_sizes: []``)."""
