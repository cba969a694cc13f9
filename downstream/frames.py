"""Frame-rate matching: 10 ms labels -> one label per upstream output frame.

Labels come one per 10 ms (label t covers samples [160 t, 160 t + 160), the convention of
s3prl's ``converted_aligned_phones.txt`` and of ``alignments/<split>.frames.txt``, with
T = ceil(samples / 160)). Upstream frames come every ``160 * R`` samples and their first
frame sits where the front end puts it (a centred STFT centres frame 0 on sample 0; Kaldi's
``snip_edges`` starts its first 25 ms window at sample 0).

The rule: **each output frame takes the label found at its centre.** Only at the very end
can a centre fall past the last label (a label file one frame short, or the centred STFT's
last frame, centred on the final sample): it takes the last label. A label file whose length
differs from ceil(samples / 160) by more than one frame raises, naming the utterance and both
lengths. Labels are never stretched or cut to fit.

Every frame-level task maps its labels through :class:`FrameGrid`; nothing else does this.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from corpora.label_frames import LABEL_HOP, TOLERANCE
from upstream import Upstream


class FrameGrid:
    """Where an upstream's output frames sit in the waveform.

    Attributes:
        hop: samples between output frames (``upstream.downsample_rate``, 160 * R).
        first_centre: sample position of output frame 0's centre.
    """

    def __init__(self, upstream: Upstream):
        self._count_frames = upstream.num_frames
        self.hop = upstream.downsample_rate
        self.first_centre = upstream.first_frame_centre

    def num_frames(self, num_samples: Sequence[int]) -> torch.Tensor:
        """(utterances,) sample counts -> (utterances,) output frame counts of the upstream."""
        return self._count_frames(torch.as_tensor(list(num_samples), dtype=torch.long))

    def label_positions(self, num_frames: int) -> torch.Tensor:
        """(num_frames,) index of the 10 ms label under each output frame's centre."""
        centres = self.first_centre + self.hop * torch.arange(num_frames, dtype=torch.float64)
        return torch.div(centres, LABEL_HOP, rounding_mode="floor").long()

    def align(self, labels: torch.Tensor, num_samples: int, utt_id: str) -> torch.Tensor:
        """(T,) labels at 10 ms -> (frames,) labels at the upstream's rate.

        Raises ValueError, naming ``utt_id``, when the labels and the audio disagree by more
        than one 10 ms frame.
        """
        expected = math.ceil(num_samples / LABEL_HOP)
        have = int(labels.numel())
        if have > expected + TOLERANCE or have < expected - TOLERANCE:
            raise ValueError(
                f"utterance {utt_id}: the label file has {have} frames of 10 ms but the audio "
                f"({num_samples} samples) has {expected}; labels and audio do not belong together "
                "(fix the label file or the corpus root)"
            )
        positions = self.label_positions(int(self.num_frames([num_samples])[0]))
        return labels[positions.clamp(max=have - 1)]
