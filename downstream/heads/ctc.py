"""CTC sequence recognition: a small recurrent head with CTC, greedy decoding, and the label error
rate (phone_ctc: phones, PER; asr_ctc extends it to characters and words)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import editdistance
import torch
import torch.nn.functional as F
from torch import nn

from ..base import Batch, Expert, StepOutput, UpstreamInfo

BLANK = 0  # CTC blank; phone class p is output p + 1


def ctc_frames_needed(sequence: torch.Tensor) -> int:
    """CTC emits one frame per label plus a blank between two equal neighbours."""
    return int(sequence.numel() + (sequence[1:] == sequence[:-1]).sum())


@dataclass
class CtcHeadConfig:
    """``rnn_layers`` (bi)LSTM layers of ``rnn_hidden`` units; 0 makes the head one linear layer."""

    rnn_hidden: int = 128
    rnn_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.0
    # LayerNorm on the features first: plain filterbanks are far from zero mean, unit scale.
    input_norm: bool = True


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, S, H) -> each item's real frames in reverse order, padding left in place."""
    steps = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, S)
    last = (lengths.to(x.device) - 1)[:, None]  # (B, 1)
    index = torch.where(steps <= last, last - steps, steps)  # (B, S)
    return x.gather(1, index[:, :, None].expand_as(x))


class PaddedLSTM(nn.Module):
    """One (bi)LSTM layer on a padded batch whose outputs on real frames do not depend on the
    padding: the backward direction runs on each item reversed within its own length.

    (Packed sequences give the same result but their backward pass is an order of magnitude
    slower on the CPU.)
    """

    def __init__(self, input_size: int, hidden_size: int, bidirectional: bool):
        super().__init__()
        self.forward_rnn = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.backward_rnn = nn.LSTM(input_size, hidden_size, batch_first=True) if bidirectional else None
        self.output_size = hidden_size * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, S, input) -> (B, S, output_size)."""
        out = self.forward_rnn(x)[0]
        if self.backward_rnn is None:
            return out
        back = reverse_padded(self.backward_rnn(reverse_padded(x, lengths))[0], lengths)
        return torch.cat([out, back], dim=-1)


class CtcExpert(Expert):
    """(Bi)LSTM -> Linear -> CTC over phones + blank; metric: PER (lower is better)."""

    config_class = CtcHeadConfig
    # One thread wherever the commands build this probe: with four busy processes on a 2-core
    # machine, asr_ctc's updates took 0.41-0.43 s on one thread and 0.78-0.84 s on two, single
    # ones up to 98.7 s (downstream/README.md, "Speed on a shared machine").
    cpu_threads = 1
    metric = "per"
    higher_is_better = False
    prediction_unit = "sequence"

    def __init__(self, upstream: UpstreamInfo, config: dict, label_names: Sequence[str]):
        super().__init__(upstream, config, label_names)
        cfg = self.config
        size = upstream.hidden_size
        self.input_norm = nn.LayerNorm(size) if cfg.input_norm else nn.Identity()
        self.rnn = nn.ModuleList()
        for _ in range(cfg.rnn_layers):
            self.rnn.append(PaddedLSTM(size, cfg.rnn_hidden, cfg.bidirectional))
            size = self.rnn[-1].output_size
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(size, len(label_names) + 1)

    def log_probs(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, S, H) -> (B, S, phones + 1) log-probabilities."""
        x = self.input_norm(features)
        for layer in self.rnn:
            x = self.dropout(layer(x, lengths))
        return self.output(x).float().log_softmax(-1)

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Greedy CTC: best class per frame, runs merged, blanks dropped -> phone indices."""
        best = log_probs.argmax(-1).cpu()
        hypotheses = []
        for row, length in zip(best, lengths.tolist()):
            merged = torch.unique_consecutive(row[:length])
            hypotheses.append(merged[merged != BLANK] - 1)
        return hypotheses

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> StepOutput:
        log_probs = self.log_probs(features, lengths)
        targets = [t.long() for t in batch.targets]
        target_lengths = torch.tensor([t.numel() for t in targets])
        loss_sum = F.ctc_loss(
            log_probs.transpose(0, 1),  # (S, B, C)
            torch.cat(targets).to(features.device) + 1,
            lengths,
            target_lengths.to(features.device),
            blank=BLANK,
            reduction="sum",
        )
        edits = sum(editdistance.eval(h.tolist(), t.tolist()) for h, t in zip(self.decode(log_probs, lengths), targets))
        stats = {
            "loss_sum": float(loss_sum.detach()),
            "utterances": len(batch),
            "edits": edits,
            "phones": int(target_lengths.sum()),
        }
        return StepOutput(loss_sum / len(batch), stats)

    def summarize(self, stats: dict[str, float]) -> dict[str, float]:
        return {"per": stats["edits"] / stats["phones"], "loss": stats["loss_sum"] / stats["utterances"]}

    def predict(self, features: torch.Tensor, lengths: torch.Tensor) -> list[list[str]]:
        hypotheses = self.decode(self.log_probs(features, lengths), lengths)
        return [[self.label_names[i] for i in h.tolist()] for h in hypotheses]
