"""Checkpoints that prove their integrity: a checksum of every tensor, written with the file and
verified when it is read, and a refusal of non-finite values.

torch.load does not notice bytes changed inside a tensor (a flipped bit on disk, a bad copy):
the file loads and the model silently computes NaN or nonsense. So every checkpoint we write
carries ``CHECKSUM_KEY``: a SHA-256 over the digests of its tensors (each one's dtype, shape
and bytes). It catches changed bytes, not a deliberate reshuffle of the payload (renamed or
moved tensors are left to strict loading). Reading verifies it; files written before it
existed have none and load as before. Someone who edits a checkpoint's tensors on purpose
drops the key before saving it again. Independently, any NaN or inf in a floating-point tensor is refused,
whatever wrote the file: a checkpoint is never expected to hold one.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

CHECKSUM_KEY = "tensor_checksum"
ALGORITHM = "sha256"


class DamagedCheckpoint(ValueError):
    """A checkpoint file that cannot be trusted: empty, truncated, unreadable, failing its
    checksum, or holding non-finite values. The message names the file."""


def _tensors(data: Any, where: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(place, tensor) for every tensor in nested dicts, lists and tuples, in payload order."""
    if isinstance(data, torch.Tensor):
        yield where, data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _tensors(value, f"{where}.{key}" if where else str(key))
    elif isinstance(data, (list, tuple)):
        for index, value in enumerate(data):
            yield from _tensors(value, f"{where}[{index}]")


def _tensor_digest(tensor: torch.Tensor) -> bytes:
    data = tensor.detach().cpu().contiguous()
    digest = hashlib.new(ALGORITHM, f"{data.dtype}|{tuple(data.shape)}|".encode())
    digest.update(data.reshape(-1).view(torch.uint8).numpy())
    return digest.digest()


def tensor_checksum(payload: dict[str, Any]) -> str:
    """``"sha256:<hex>"`` over the sorted digests of every tensor of ``payload``."""
    digests = sorted(_tensor_digest(tensor) for _, tensor in _tensors(payload))
    return f"{ALGORITHM}:{hashlib.new(ALGORITHM, b''.join(digests)).hexdigest()}"


def with_checksum(payload: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``payload`` carrying the checksum of its tensors."""
    return {**payload, CHECKSUM_KEY: tensor_checksum(payload)}


def file_version(path: str | Path) -> tuple[int, int, int, int]:
    """What changes whenever a file's bytes change: (size, mtime, ctime, inode), in ns.

    Size and mtime alone miss a same-size rewrite whose mtime was put back (``touch -r``,
    ``cp -p``, rsync, checkouts). The change time (ctime) cannot be set back: every write,
    and every metadata change, moves it; a file replaced by a rename gets a new inode. A
    chmod or a new hard link moves it too: such a file counts as changed, the safe side."""
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, version: tuple[int, int, int, int]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, computed once per version of the file (path and
    :func:`file_version`) in a process: many probes of one checkpoint hash it once."""
    resolved = Path(path).resolve()
    return _file_sha256(str(resolved), file_version(resolved))


def _non_finite(tensor: torch.Tensor) -> int:
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return 0
    values = tensor.detach().cpu()
    if values.dtype in (torch.float32, torch.float64):
        return int((~np.isfinite(values.numpy())).sum())  # numpy: several times faster here
    return int((~torch.isfinite(values)).sum())


def verify_integrity(data: dict[str, Any], path: str | Path) -> None:
    """Raise :class:`DamagedCheckpoint` naming ``path`` when its tensors fail the stored
    checksum (if it has one) or hold NaN or inf."""
    stored = data.get(CHECKSUM_KEY)
    if stored is not None and stored != tensor_checksum(data):
        raise DamagedCheckpoint(
            f"checkpoint {path} is damaged: its tensors no longer match the checksum written with them "
            "(bytes changed on disk or in a copy); use an intact copy or an earlier checkpoint "
            f"(if you changed its tensors on purpose, delete its {CHECKSUM_KEY!r} entry)"
        )
    for where, tensor in _tensors(data):
        bad = _non_finite(tensor)
        if bad:
            raise DamagedCheckpoint(
                f"checkpoint {path} holds {bad} NaN/inf value(s) in {where}; it is damaged or was saved "
                "from a diverged run; use an intact copy or an earlier checkpoint"
            )
