"""Probe checkpoints: what a run is (``RunSpec``) plus its weights and training state.

A probe checkpoint is plain data (loads with ``weights_only=True``)::

    {"format": "downstream-probe", "version": 1, "run": RunSpec as a dict,
     "step": int, "epoch": int, "batch_in_epoch": int, "label_names": [...],
     "weights": {"featurizer": ..., "expert": ..., "upstream": ... (see below)},
     "optimizer": ..., "scheduler": ..., "scaler": ..., "rng": ..., "dev_metrics": {...},
     "checkpoint_keeper": {"best_metric": ..., "best_step": ...}, ...}

The upstream's encoder weights are stored when it is fine-tuned, or when it has no checkpoint
of its own (random weights), so evaluation always sees the exact upstream of training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from utility.checkpoint_file import read_checkpoint_file
from utility.checkpoint_keeper import CheckpointKeeper, read_newest_intact

FORMAT = "downstream-probe"
VERSION = 1
BEST = "best.ckpt"


@dataclass
class RunSpec:
    """Everything that defines a probing run besides its data files."""

    task: str
    upstream: Optional[str]  # registered name; None: whatever upstream_ckpt describes
    upstream_ckpt: Optional[str]
    layer: Optional[int]  # None: learnable weighted sum of all hidden states
    fine_tune: bool
    seed: int
    config: dict[str, Any]  # the task config (sections runner, optimizer, data, expert)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSpec":
        return cls(**data)

    @property
    def upstream_label(self) -> str:
        return self.upstream if self.upstream is not None else Path(self.upstream_ckpt).stem


def read_located_checkpoint(
    path: str | Path, prefer_best: bool, skip_damaged: bool = False, set_aside: bool = False
) -> tuple[Path, dict[str, Any]]:
    """A probe checkpoint file, or an experiment folder's newest intact one: its ``best.ckpt``
    (``prefer_best``) or its newest step checkpoint (see
    ``utility.checkpoint_keeper.read_newest_intact`` for damaged ones and ``skip_damaged``)."""
    return read_newest_intact(
        path,
        read_probe_checkpoint,
        prefer_best=prefer_best,
        skip_damaged=skip_damaged,
        set_aside=set_aside,
        none_found=f"{{folder}} holds no probe checkpoint ({BEST} or {CheckpointKeeper.PREFIX}-*.ckpt); was it trained?",
    )


def read_probe_checkpoint(path: str | Path) -> dict[str, Any]:
    data = read_checkpoint_file(path)
    if data.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a probe checkpoint (format {data.get('format')!r}); "
            "give the experiment folder of run_downstream.py or one of its .ckpt files"
        )
    if data.get("version") != VERSION:
        raise ValueError(f"{path} is probe checkpoint version {data.get('version')}; this code reads {VERSION}")
    return data
