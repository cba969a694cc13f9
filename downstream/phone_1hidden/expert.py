"""Frame-level phone classification with one hidden layer."""

from downstream.frame_classifier import FrameClassificationExpert


class DownstreamExpert(FrameClassificationExpert):
    """Linear-ReLU-Linear on every frame (``expert.hidden_sizes: [768]``)."""
