"""Pretraining checkpoints: an upstream checkpoint (loadable by name through torch.hub) with
the training state beside it, all plain data.

    {"format", "version", "upstream": {...}, "metadata": {...},   <- upstream.loading format
     "head": prediction head state dict,
     "pretraining": {"settings", "step", "finished", "optimizer", "scheduler", "scaler",
                     "rng", "counters"},
     "checkpoint_keeper": {...}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from upstream.checkpoint import check_own_checkpoint, read_checkpoint_file
from utility.training import CheckpointKeeper, read_newest_intact

SECTION = "pretraining"


def read_resume_checkpoint(path: str | Path, skip_damaged: bool = False, set_aside: bool = True) -> tuple[Path, dict[str, Any]]:
    """The checkpoint ``-e PATH`` continues from: the file as given, or the newest step
    checkpoint of a folder (a damaged one is named; with ``skip_damaged`` the newest intact one
    is used and, with ``set_aside``, the damaged ones renamed, see ``read_newest_intact``)."""
    path = Path(path)
    if path.is_file():
        return path, read_training_checkpoint(path)
    candidates = [step_path for _, step_path in CheckpointKeeper(path).step_checkpoints()][::-1]
    if not candidates:
        find_checkpoint(path)  # raises: nothing to resume
    return read_newest_intact(candidates, read_training_checkpoint, skip_damaged, set_aside)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or the newest step checkpoint of an experiment folder."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        latest = CheckpointKeeper(path).latest()
        if latest is None:
            raise FileNotFoundError(
                f"no step checkpoints (states-*.ckpt) in {path}; start a new run with -n/-p instead of -e"
            )
        return latest
    raise FileNotFoundError(f"-e {path}: no such checkpoint file or experiment folder")


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
