"""Which upstream checkpoint a probe was trained on, by content, not just by path.

A probe run with ``-k FILE`` records ``{"path", "size", "sha256"}`` of FILE in every probe
checkpoint (``RECORD_KEY``). Resuming, evaluating or applying the probe compares the file now
at that path with the record and refuses a changed one, saying what changed, unless
``--allow-upstream-change``; then the new record keeps the old one under ``"replaced"``, so
the results say so. Probe checkpoints written before this record existed are used as they
are, with a notice that the file cannot be checked.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional

from utility.integrity import file_sha256

RECORD_KEY = "upstream_file"
ALLOW_FLAG = "--allow-upstream-change"


def fingerprint(path: str | Path) -> dict[str, Any]:
    """``{"path", "size", "sha256"}`` of an upstream checkpoint file."""
    return {"path": str(path), "size": os.stat(path).st_size, "sha256": file_sha256(path)}


def upstream_record(upstream_ckpt: Optional[str]) -> Optional[dict[str, Any]]:
    """The record a new run stores: None when the upstream has no checkpoint file."""
    return fingerprint(upstream_ckpt) if upstream_ckpt is not None else None


def _changes(recorded: dict[str, Any], current: dict[str, Any]) -> str:
    parts = []
    if recorded["size"] != current["size"]:
        parts.append(f"size {recorded['size']} -> {current['size']} bytes")
    parts.append(f"sha256 {recorded['sha256'][:12]}... -> {current['sha256'][:12]}...")
    return ", ".join(parts)


def moved_upstream(checkpoint: dict[str, Any], path: Optional[str]) -> None:
    """``-k PATH`` with ``-e``: the upstream file of the probe is now at ``path`` (moved or
    copied). The checkpoint is changed in memory only; :func:`check_upstream_file` then checks
    that ``path`` holds the recorded file."""
    if path is None:
        return
    if checkpoint["run"]["upstream_ckpt"] is None:
        raise ValueError(
            f"-k {path}: this probe was trained on upstream {checkpoint['run']['upstream']!r} without a checkpoint "
            "file, so there is no file to point to; drop -k"
        )
    checkpoint["run"]["upstream_ckpt"] = str(path)


def check_upstream_file(checkpoint: dict[str, Any], source: str | Path, allow_change: bool) -> Optional[dict[str, Any]]:
    """The record of the upstream file a probe checkpoint will now run on.

    Raises ValueError when that file differs from the one the probe was trained on (unless
    ``allow_change``), FileNotFoundError when it is gone.
    """
    upstream_ckpt = checkpoint["run"]["upstream_ckpt"]
    if upstream_ckpt is None:
        return None  # a named upstream without a file: its weights travel in the probe checkpoint
    if not Path(upstream_ckpt).is_file():
        raise FileNotFoundError(
            f"the upstream checkpoint {upstream_ckpt} that probe {source} was trained on is missing; "
            "restore it, give its new place with -k FILE (or run from the folder the probe was trained in, for a relative path)"
        )
    current = fingerprint(upstream_ckpt)
    recorded = checkpoint.get(RECORD_KEY)
    if recorded is None:
        warnings.warn(
            f"{source} predates upstream file records: cannot check that {upstream_ckpt} is the file it was trained on",
            stacklevel=2,
        )
        return current
    if (recorded["size"], recorded["sha256"]) == (current["size"], current["sha256"]):
        return current
    changes = _changes(recorded, current)
    if not allow_change:
        raise ValueError(
            f"the upstream checkpoint {upstream_ckpt} has changed since probe {source} was trained ({changes}); "
            f"restore the original file, train a new probe, or pass {ALLOW_FLAG} to use the new file anyway"
        )
    warnings.warn(f"{ALLOW_FLAG}: using the changed upstream checkpoint {upstream_ckpt} ({changes})", stacklevel=2)
    return {**current, "replaced": recorded}
