"""Frame-level phone classification with the papers' two-hidden-layer classifier."""

from downstream.frame_classifier import FrameClassificationExpert


class DownstreamExpert(FrameClassificationExpert):
    """Linear-ReLU-Linear-ReLU-Linear on every frame (``expert.hidden_sizes: [768, 768]``)."""
