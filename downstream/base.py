"""The contract between the runner and a task folder.

A task folder ``downstream/<task>/`` holds:

- ``config.yaml`` with sections ``runner``, ``optimizer``, ``data`` and ``expert``;
- ``dataset.py`` defining ``build_datasets(config: DataConfig, grid: FrameGrid) -> TaskData``
  (it receives only the ``data`` section, typed by its ``DataConfig`` dataclass);
- ``expert.py`` defining ``class DownstreamExpert(Expert)`` (it receives only the ``expert``
  section).

The runner owns everything else: the upstream, the featurizer, batching, optimisation,
checkpoints and logs.
"""

from __future__ import annotations

import abc
import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

import numpy as np
import torch
from torch import nn

from upstream import read_audio
from utility.typed_config import dataclass_from_dict

from .frames import FrameGrid


@dataclass
class Example:
    """One utterance: its waveform (samples,) and its target (task-specific tensor)."""

    utt_id: str
    wav: torch.Tensor
    target: torch.Tensor


@dataclass
class Batch:
    """A list of utterances; targets stay per utterance (the expert pads what it needs).

    ``states``: with the feature cache, each utterance's stored hidden states
    (frames, states, hidden) instead of its waveform (``wavs`` is then empty).
    """

    utt_ids: list[str]
    wavs: list[torch.Tensor]
    targets: list[torch.Tensor]
    states: Optional[list[torch.Tensor]] = None

    def __len__(self) -> int:
        return len(self.utt_ids)


class ProbeDataset(torch.utils.data.Dataset):
    """Utterances with one target tensor each.

    Args:
        utt_ids: utterance ids.
        sources: where each waveform comes from; audio file paths here (``load_wav`` reads
            them), anything a subclass's ``load_wav`` understands otherwise.
        targets: one tensor per utterance (a class index (), labels per frame (frames,) ...).
        classes: for each utterance, the class indices it contains; used to keep every class
            when a proportion of the training data is drawn.
    """

    def __init__(
        self,
        utt_ids: Sequence[str],
        sources: Sequence[Any],
        targets: Sequence[torch.Tensor],
        classes: Sequence[np.ndarray],
    ):
        if not len(utt_ids) == len(sources) == len(targets) == len(classes):
            raise ValueError("utt_ids, sources, targets and classes must have one entry per utterance")
        if not utt_ids:
            raise ValueError("a dataset needs at least one utterance")
        self.utt_ids = list(utt_ids)
        self.sources = list(sources)
        self.targets = list(targets)
        self.classes = list(classes)

    def load_wav(self, source: Any) -> torch.Tensor:
        """(samples,) float waveform at 16 kHz."""
        return read_audio(source)

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getitem__(self, index: int) -> Example:
        return Example(self.utt_ids[index], self.load_wav(self.sources[index]), self.targets[index])

    def subset(self, indices: Sequence[int]) -> "ProbeDataset":
        """The same dataset restricted to ``indices`` (subclasses keep their type)."""
        part = copy.copy(self)
        for name in ("utt_ids", "sources", "targets", "classes"):
            setattr(part, name, [getattr(self, name)[i] for i in indices])
        return part

    @staticmethod
    def collate(examples: Sequence[Example]) -> Batch:
        return Batch([e.utt_id for e in examples], [e.wav for e in examples], [e.target for e in examples])


@dataclass
class TaskData:
    """What ``build_datasets`` returns: the three splits and the name of every class."""

    train: ProbeDataset
    dev: ProbeDataset
    test: ProbeDataset
    label_names: list[str]

    def split(self, name: str) -> ProbeDataset:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)


SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class UpstreamInfo:
    """What an expert may know about the upstream."""

    hidden_size: int
    num_hidden_states: int
    grid: FrameGrid


@dataclass
class StepOutput:
    """An expert's answer for one batch: the loss to minimise and additive statistics
    (counts and sums) that ``Expert.summarize`` turns into metrics. Statistics from several
    batches or processes are summed before summarising."""

    loss: torch.Tensor
    stats: dict[str, float]


class Expert(nn.Module, abc.ABC):
    """Base class of every task's ``DownstreamExpert``.

    Subclasses set ``config_class`` (a dataclass for their ``expert`` config section),
    ``metric`` (the key of ``summarize``'s output used to pick the best checkpoint),
    ``higher_is_better`` and ``prediction_unit``.
    """

    config_class: ClassVar[type]
    metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    # What ``predict`` gives per utterance: "frames" (one label per upstream frame),
    # "utterance" (one label) or "sequence" (a label sequence, e.g. phones).
    prediction_unit: ClassVar[str] = "frames"
    # CPU threads the commands give the task's probe when the user set none (None: the process's
    # count). A head of many small per-frame operations (an LSTM) gains little from a second
    # thread and loses most when a core is busy with other work (downstream/README.md, "Speed on
    # a shared machine").
    cpu_threads: ClassVar[Optional[int]] = None

    def __init__(self, upstream: UpstreamInfo, config: dict[str, Any], label_names: Sequence[str]):
        super().__init__()
        self.upstream = upstream
        self.config = dataclass_from_dict(self.config_class, config, "expert")
        self.label_names = list(label_names)

    @abc.abstractmethod
    def forward(self, features: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> StepOutput:
        """features: (B, S, H) weighted upstream states, zero past ``lengths`` (B,)."""

    @abc.abstractmethod
    def summarize(self, stats: dict[str, float]) -> dict[str, float]:
        """Summed statistics -> metrics (must include ``self.metric``)."""

    @abc.abstractmethod
    def predict(self, features: torch.Tensor, lengths: torch.Tensor) -> list[list[str]]:
        """Label names predicted for each utterance (one per frame, one per utterance, or a
        sequence, as the task defines)."""
