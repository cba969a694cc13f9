"""Speech recognition probe: a (Bi)LSTM head with CTC over characters, greedy decoding,
word and character error rates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import editdistance
import torch
import torch.nn.functional as F

from downstream.base import Batch, StepOutput, UpstreamInfo
from downstream.heads.ctc import BLANK, CtcExpert, CtcHeadConfig
from utility.typed_config import check_choice

from .dataset import WORD_BOUNDARY


SELECTION_METRICS = ("wer", "cer")


@dataclass
class AsrHeadConfig(CtcHeadConfig):
    """Defaults: one BiLSTM layer of 128 units per direction, small enough for the demo corpus
    on a CPU. SUPERB's ASR head (2 layers of 1024, dropout 0.2) is ``superb.yaml``."""

    # The dev metric that picks the best checkpoint. SUPERB's is WER; on an hour of speech WER
    # stays at 1.0 (all blanks, then nonsense words) long after CER starts falling, and a tie
    # keeps the earliest checkpoint, so small corpora want cer.
    select_by: str = "wer"

    def __post_init__(self) -> None:
        check_choice("expert.select_by", self.select_by, SELECTION_METRICS)


class DownstreamExpert(CtcExpert):
    """(Bi)LSTM -> Linear -> CTC over characters + blank; metric: WER (lower is better).

    CER counts the word boundaries too (edits over ``T H E | C A T``), as s3prl's UER does.
    """

    config_class = AsrHeadConfig
    metric = "wer"  # or cer: expert.select_by

    def __init__(self, upstream: UpstreamInfo, config: dict, label_names: Sequence[str]):
        super().__init__(upstream, config, label_names)
        self.metric = self.config.select_by

    def spell(self, classes: torch.Tensor) -> tuple[list[str], list[str]]:
        """Class indices -> (characters, words)."""
        characters = [self.label_names[i] for i in classes.tolist()]
        return characters, "".join(characters).replace(WORD_BOUNDARY, " ").split()

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> StepOutput:
        log_probs = self.log_probs(features, lengths)  # (B, S, characters + 1)
        targets = [t.long() for t in batch.targets]
        target_lengths = torch.tensor([t.numel() for t in targets], device=features.device)
        labels = torch.cat(targets).to(features.device) + 1  # class c is output c + 1, after the blank
        loss_sum = F.ctc_loss(log_probs.transpose(0, 1), labels, lengths, target_lengths, blank=BLANK, reduction="sum")
        stats = {
            "loss_sum": float(loss_sum.detach()),
            "utterances": len(batch),
            "char_edits": 0,
            "chars": 0,
            "word_edits": 0,
            "words": 0,
        }
        for hypothesis, target in zip(self.decode(log_probs, lengths), targets):
            (hyp_chars, hyp_words), (ref_chars, ref_words) = self.spell(hypothesis), self.spell(target)
            stats["char_edits"] += editdistance.eval(hyp_chars, ref_chars)
            stats["chars"] += len(ref_chars)
            stats["word_edits"] += editdistance.eval(hyp_words, ref_words)
            stats["words"] += len(ref_words)
        return StepOutput(loss_sum / len(batch), stats)

    def summarize(self, stats: dict[str, float]) -> dict[str, float]:
        return {
            "wer": stats["word_edits"] / stats["words"],
            "cer": stats["char_edits"] / stats["chars"],
            "loss": stats["loss_sum"] / stats["utterances"],
        }

    def predict(self, features: torch.Tensor, lengths: torch.Tensor) -> list[list[str]]:
        """The recognised words of each utterance."""
        return [self.spell(h)[1] for h in self.decode(self.log_probs(features, lengths), lengths)]
