"""Frame-level speaker identification: one linear layer on every frame."""

from downstream.heads.frame import FrameClassificationExpert


class DownstreamExpert(FrameClassificationExpert):
    """Every real frame carries its utterance's speaker; metric: frame accuracy."""
