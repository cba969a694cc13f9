"""Checkpoints that prove their integrity: a digest of every byte of the file and a checksum of
every tensor, written with the file and verified when it is read, and a refusal of non-finite values.

The file digest (the seal) is a SHA-256 of the whole ``torch.save`` archive, stored as the zip
archive's comment, the last bytes of the file, where zip readers (torch.load included) expect
and skip it: a flipped bit anywhere (a tensor, a number or string of the payload such as
``checkpoint_keeper.best_metric``, the zip structure, the seal itself) is refused. Files
written before the seal existed end with an empty comment and are checked as before.

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
from typing import IO, Any, Iterator

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


_END_OF_ZIP = b"PK\x05\x06"  # the end-of-central-directory record: 22 bytes, then the comment
_END_RECORD_SIZE = 22
SEAL_PREFIX = b"mam-file-sha256:"
SEAL_SIZE = len(SEAL_PREFIX) + 64


class SealingWriter:
    """A binary stream that passes ``torch.save``'s writes on to ``stream`` and hashes them;
    :meth:`seal` then stores the digest as the archive's comment."""

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.stream.write(data)

    def flush(self) -> None:
        self.stream.flush()

    def seal(self) -> None:
        """Replace the empty comment (its 2-byte length, the last bytes torch.save wrote) by the
        digest of everything written, as the zip comment."""
        comment = SEAL_PREFIX + self.digest.hexdigest().encode()
        self.stream.seek(-2, os.SEEK_END)
        self.stream.write(len(comment).to_bytes(2, "little") + comment)


def verify_seal(path: str | Path) -> None:
    """Raise :class:`DamagedCheckpoint` naming ``path`` when its bytes no longer match the seal
    written with it. Files without a seal (an empty zip comment) pass: they were written
    before it existed, or by another program."""
    size = os.path.getsize(path)
    with open(path, "rb") as stream:
        stream.seek(max(0, size - _END_RECORD_SIZE - SEAL_SIZE))
        tail = stream.read()
    end = tail.rfind(_END_OF_ZIP)
    if end < 0:
        return  # not a zip archive: the format check names it
    declared = int.from_bytes(tail[end + 20 : end + 22], "little")
    comment = tail[end + _END_RECORD_SIZE :]
    if declared == 0 and not comment:
        return  # unsealed
    if declared == len(comment) != SEAL_SIZE:
        return  # another program's zip comment
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        remaining = size - len(comment) - 2
        while remaining > 0:
            block = stream.read(min(remaining, 1 << 22))
            if not block:
                break
            digest.update(block)
            remaining -= len(block)
    digest.update(b"\x00\x00")  # the empty comment's length, as torch.save wrote it before sealing
    if declared != len(comment) or comment != SEAL_PREFIX + digest.hexdigest().encode():
        raise DamagedCheckpoint(
            f"checkpoint {path} is damaged: its bytes no longer match the digest written with them "
            "(changed on disk or in a copy); use an intact copy or an earlier checkpoint"
        )


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
