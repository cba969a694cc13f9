"""The checkpoints of an experiment folder: writing and pruning them, ``best.ckpt``, and finding
the newest intact one to continue from.

Everything that goes into a checkpoint is plain data (tensors, lists, numbers, strings), so
checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from .checkpoint_file import save_atomic
from .integrity import DamagedCheckpoint


class CheckpointKeeper:
    """Writes ``states-<step>.ckpt`` files atomically, keeps the newest ``max_keep`` of them
    and, separately, ``best.ckpt``: the one with the lowest (or highest) metric so far.

    The keeper's own state (best metric and step) is stored inside every payload it writes
    under ``"checkpoint_keeper"``, so :meth:`load_state_dict` after a resume continues it.
    Folders written before the runners shared this naming hold ``step-<step>.ckpt`` files;
    they are found, resumed from and pruned like the new ones.
    """

    STATE_KEY = "checkpoint_keeper"
    PREFIX = "states"
    LEGACY_PREFIXES = ("step",)

    def __init__(self, directory: str | Path, max_keep: int = 3, higher_is_better: bool = False):
        if max_keep < 1:
            raise ValueError(f"max_keep must be >= 1, got {max_keep}")
        self.directory = Path(directory)
        self.max_keep = max_keep
        self.higher_is_better = higher_is_better
        self.best_metric: Optional[float] = None
        self.best_step: Optional[int] = None
        prefixes = "|".join(re.escape(p) for p in (self.PREFIX, *self.LEGACY_PREFIXES))
        self._pattern = re.compile(rf"^(?:{prefixes})-(\d+)\.ckpt$")

    @property
    def best_path(self) -> Path:
        return self.directory / "best.ckpt"

    def path_for(self, step: int) -> Path:
        return self.directory / f"{self.PREFIX}-{step:08d}.ckpt"

    def step_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of the kept step checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = self._pattern.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def latest(self) -> Optional[Path]:
        """The newest step checkpoint, or None."""
        found = self.step_checkpoints()
        return found[-1][1] if found else None

    def candidates(self, prefer_best: bool = False) -> list[Path]:
        """The checkpoints in the order a reader tries them: ``best.ckpt`` (``prefer_best``),
        then the step checkpoints, newest first."""
        steps = [path for _, path in self.step_checkpoints()][::-1]
        return [path for path in ([self.best_path] if prefer_best else []) + steps if path.is_file()]

    def is_better(self, metric: float) -> bool:
        if self.best_metric is None:
            return True
        return metric > self.best_metric if self.higher_is_better else metric < self.best_metric

    def record(self, metric: Optional[float], step: int) -> bool:
        """Note ``metric`` of ``step``; True when it is the best so far. (Processes that do not
        write checkpoints call this to keep the same best step as the one that does.)"""
        improved = metric is not None and self.is_better(metric)
        if improved:
            self.best_metric, self.best_step = float(metric), int(step)
        return improved

    def save(self, payload: dict[str, Any], step: int, metric: Optional[float] = None) -> Path:
        """Write ``payload`` for ``step``; also as ``best.ckpt`` when ``metric`` improves."""
        improved = self.record(metric, step)
        payload[self.STATE_KEY] = self.state_dict()
        path = save_atomic(payload, self.path_for(step))
        if improved:
            self.publish_best(path, payload)
        for _, old in self.step_checkpoints()[: -self.max_keep]:
            old.unlink(missing_ok=True)
        return path

    def publish_best(self, path: Path, payload: dict[str, Any]) -> None:
        """Make the checkpoint just written at ``path`` (holding ``payload``) ``best.ckpt``."""
        # A hard link shares the bytes just written; the rename keeps the swap atomic.
        temp = self.best_path.with_name(f".{self.best_path.name}.{os.getpid()}.link")
        try:
            temp.unlink(missing_ok=True)
            os.link(path, temp)
            os.replace(temp, self.best_path)
        except OSError:  # file systems without hard links
            temp.unlink(missing_ok=True)
            save_atomic(payload, self.best_path)

    def remove_partial_files(self) -> list[Path]:
        """Delete temporary files left by writes that were killed midway (see save_atomic)."""
        if not self.directory.is_dir():
            return []
        partial = [p for p in self.directory.glob(".*.ckpt.*") if p.suffix in (".tmp", ".link")]
        for path in partial:
            path.unlink(missing_ok=True)
        return partial

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric": self.best_metric, "best_step": self.best_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_metric = state.get("best_metric")
        self.best_step = state.get("best_step")


def experiment_of(path: str | Path) -> Path:
    """The experiment folder ``-e PATH`` continues: the folder itself, or a checkpoint file's folder."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    raise FileNotFoundError(f"-e {path}: no such checkpoint file or experiment folder")


def check_resumes_the_newest(given: str | Path, step: int) -> None:
    """Refuse ``-e FILE`` when FILE's folder holds step checkpoints newer than FILE (``step``):
    the continued run would write over them, over ``best.ckpt`` and over the run's results.
    (``-e FOLDER`` always continues from the newest.)"""
    given = Path(given)
    if not given.is_file():
        return
    newer = [path.name for saved, path in CheckpointKeeper(given.parent).step_checkpoints() if saved > step]
    if newer:
        raise ValueError(
            f"-e {given} continues from step {step}, but {given.parent} holds newer checkpoints ({', '.join(newer)}) "
            "that the continued run would overwrite, with its best.ckpt and results: continue from the newest with "
            f"-e {given.parent}, or copy {given.name} into a new folder and continue there (-e NEWDIR/{given.name})"
        )


SKIP_DAMAGED_FLAG = "--skip-damaged"
Checkpoint = TypeVar("Checkpoint")


def read_newest_intact(
    path: str | Path,
    read: Callable[[Path], Checkpoint],
    *,
    prefer_best: bool = False,
    skip_damaged: bool = False,
    set_aside: bool = False,
    none_found: str = "no checkpoint (best.ckpt or states-*.ckpt) in {folder}",
) -> tuple[Path, Checkpoint]:
    """A checkpoint file as given, or the newest intact checkpoint of an experiment folder:
    its ``best.ckpt`` first when ``prefer_best``, then its step checkpoints, newest first.

    In a folder, when the newest is damaged (:class:`DamagedCheckpoint`), the error names it and
    offers the newest intact one; with ``skip_damaged`` that one is used instead, with a warning
    naming the damaged ones, which ``set_aside`` renames to ``*.damaged`` (a resumed run would
    otherwise keep them as its newest checkpoints and prune the good ones). ``none_found`` is
    the message (``{folder}`` filled in) for a folder that holds no checkpoint.
    """
    path = Path(path)
    if path.is_file():
        return path, read(path)
    if not path.is_dir():
        raise FileNotFoundError(f"-e {path}: no such checkpoint file or experiment folder")
    candidates = CheckpointKeeper(path).candidates(prefer_best)
    if not candidates:
        raise FileNotFoundError(none_found.format(folder=path))
    damaged: list[tuple[Path, DamagedCheckpoint]] = []
    for candidate in candidates:
        try:
            checkpoint = read(candidate)
        except DamagedCheckpoint as error:
            damaged.append((candidate, error))
            continue
        except FileNotFoundError:
            continue  # set aside a moment ago by another process of the same run
        if damaged and not skip_damaged:
            raise DamagedCheckpoint(
                f"{damaged[0][1]}. The newest intact checkpoint is {candidate}: add {SKIP_DAMAGED_FLAG} to use it"
            )
        for bad, error in damaged:
            note = ""
            if set_aside:
                bad.rename(bad.with_name(f"{bad.name}.damaged"))
                note = f" ({bad.name} renamed to {bad.name}.damaged)"
            warnings.warn(f"{error}; using {candidate} instead{note}", stacklevel=2)
        return candidate, checkpoint
    if damaged:
        raise DamagedCheckpoint(f"{damaged[0][1]}; no intact checkpoint is left beside it")
    raise FileNotFoundError(none_found.format(folder=path))
