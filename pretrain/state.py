"""Pretraining checkpoints: an upstream checkpoint (loadable by name through torch.hub) with
the training state beside it, all plain data.

    {"format", "version", "upstream": {...}, "metadata": {...},   <- upstream.checkpoint format
     "head": prediction head state dict,
     "pretraining": {"settings", "step", "finished", "optimizer", "scheduler", "scaler",
                     "rng", "counters"},
     "checkpoint_keeper": {...}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from upstream.checkpoint import check_own_checkpoint
from utility.checkpoint_file import read_checkpoint_file
from utility.checkpoint_keeper import read_newest_intact

SECTION = "pretraining"


def read_resume_checkpoint(path: str | Path, skip_damaged: bool = False, set_aside: bool = True) -> tuple[Path, dict[str, Any]]:
    """The checkpoint ``-e PATH`` continues from: the file as given, or the newest intact step
    checkpoint of a folder (see ``utility.checkpoint_keeper.read_newest_intact``)."""
    return read_newest_intact(
        path,
        read_training_checkpoint,
        skip_damaged=skip_damaged,
        set_aside=set_aside,
        none_found="no step checkpoints (states-*.ckpt) in {folder}; start a new run with -n/-p instead of -e",
    )


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a pretraining checkpoint (weights_only), refusing files without training state."""
    data = read_checkpoint_file(path)
    check_own_checkpoint(data, path)
    if SECTION not in data or "head" not in data:
        raise ValueError(
            f"{path} holds an upstream without pretraining state (optimizer, step, ...), so it cannot be "
            "resumed; load it with torch.hub / build_upstream, or start a new run"
        )
    return data
