"""Phone recognition: the shared CTC head over phones, metric PER."""

from downstream.heads.ctc import CtcExpert


class DownstreamExpert(CtcExpert):
    """(Bi)LSTM -> Linear -> CTC over phones + blank; metric: PER (lower is better)."""
