"""Where the feature cache keeps each utterance's hidden states: in memory, or in memory-mapped
shards on disk.

A disk store is one folder, named by the fingerprint of everything that changes the features
(``feature_cache.CacheSpec``). It holds shards, each a pair:

- ``shard-*.npy``: (rows, states, hidden) in the storage dtype, its utterances one after another;
- ``shard-*.json``, its index: the store it belongs to (the folder's name), the utterance keys it
  holds with each one's first row and frame count, and the data file's size and SHA-256.

Each file is written to a temporary name (``.shard-*.tmp``), fsync'd, renamed into place and
the folder fsync'd: the data first, then the index, which commits the shard. A killed run or a
power loss therefore leaves nothing a later run trusts. Every shard is checked when a store is
opened: one whose index is empty, partial or unreadable, names another store (a shard copied
in from another folder), or whose data is missing or does not match the index (size, SHA-256,
rows) is dropped with a warning naming it, and its utterances are extracted again. Temporary
files left by a process that died are removed then too: a live writer holds a lock on its own.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Sequence

import numpy as np
import torch

from utility.integrity import file_sha256

SHARD_BYTES = 256 << 20  # a shard is written once this much is extracted
TEMPORARY = ".shard-*.tmp"
# A temporary file this young and still empty may be one a writer has created and not yet
# locked: it is left alone.
_CREATION_GRACE_S = 10.0


def numpy_storage(dtype: torch.dtype) -> torch.dtype:
    """The dtype a shard's numpy array holds: numpy has no bfloat16, so such shards hold the
    raw 16-bit patterns."""
    return torch.int16 if dtype == torch.bfloat16 else dtype


@dataclass(frozen=True)
class ShardIndex:
    """The content of a ``shard-*.json``: see the module docstring."""

    store: str
    keys: list[str]
    starts: list[int]
    frames: list[int]
    bytes: int
    sha256: str

    @classmethod
    def read(cls, path: Path) -> "ShardIndex":
        """Raises ValueError saying what is wrong with the file (empty, partial, not an index)."""
        text = path.read_text(errors="replace")
        if not text.strip():
            raise ValueError("its index is empty")
        try:
            data = json.loads(text)
        except ValueError as error:
            raise ValueError(f"its index is not complete JSON ({error})") from None
        names = [field.name for field in fields(cls)]
        if not isinstance(data, dict) or set(data) != set(names):
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"its index has {found}, expected {names}")
        index = cls(**data)
        lists = (index.keys, index.starts, index.frames)
        if not all(isinstance(part, list) and len(part) == len(index.keys) for part in lists):
            raise ValueError("its index's keys, starts and frames differ in length")
        if not all(isinstance(key, str) for key in index.keys) or not all(
            isinstance(n, int) and n >= 0 for n in [*index.starts, *index.frames]
        ):
            raise ValueError("its index holds keys or row numbers of the wrong type")
        return index


def _fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a rename lives in the folder's own data)."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write`` into ``.NAME.tmp`` beside ``path`` (locked while it is written, see
    :func:`sweep_temporaries`), fsync, rename over ``path``, fsync the folder. On any failure
    (a full disk included) the temporary file is removed and the error raised."""
    temp = path.with_name(f".{path.name}.tmp")
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with os.fdopen(handle, "wb", closefd=False) as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)  # still locked: a sweeper never sees it unlocked under this name
        _fsync_folder(path.parent)
    except BaseException as error:
        temp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno is None and " requested and " in str(error):
            # numpy's tofile (np.save to a file) reports a short write as "N requested and M
            # written", without an errno: on a local file that is a full disk (or quota).
            raise OSError(errno.ENOSPC, f"No space left on device ({error})", str(path)) from error
        raise
    finally:
        os.close(handle)


def sweep_temporaries(folder: Path) -> None:
    """Remove the ``.shard-*.tmp`` files in ``folder`` that no live process is writing."""
    for path in folder.glob(TEMPORARY):
        try:
            handle = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # renamed or removed meanwhile
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer
            held = os.fstat(handle)
            if held.st_size == 0 and time.time() - held.st_mtime < _CREATION_GRACE_S:
                continue
            try:
                current = os.stat(path)
            except FileNotFoundError:
                continue
            if (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                path.unlink(missing_ok=True)
        finally:
            os.close(handle)


def stored_bytes(folder: Path) -> int:
    """Bytes of the shard data ``folder`` holds (0 when it does not exist)."""
    return sum(path.stat().st_size for path in folder.glob("shard-*.npy")) if folder.is_dir() else 0


class DiskStore:
    """Memory-mapped shards in ``folder``; see the module docstring for the layout."""

    def __init__(self, folder: Path, dtype: torch.dtype, writer: str = "0"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self.writer = writer  # in shard names, so processes never write the same file
        self.index: dict[str, tuple[str, int, int]] = {}  # key -> (shard, first row, frames)
        self.arrays: dict[str, np.ndarray] = {}
        self.pending_keys: list[str] = []
        self.pending: list[torch.Tensor] = []
        self.written = 0  # shards this store wrote (their names count them)
        sweep_temporaries(self.folder)
        self.reload()

    def reload(self) -> None:
        """Read every complete shard's index; drop (and warn about) damaged or foreign shards."""
        for meta_path in sorted(self.folder.glob("shard-*.json")):
            shard = meta_path.stem
            if shard in self.arrays:
                continue
            data_path = meta_path.with_suffix(".npy")
            try:
                index = ShardIndex.read(meta_path)
                array = self._open(data_path, index)
            except (OSError, ValueError) as problem:
                warnings.warn(
                    f"feature cache shard {data_path} is dropped ({problem}); its utterances are recomputed", stacklevel=2
                )
                meta_path.unlink(missing_ok=True)
                data_path.unlink(missing_ok=True)
                continue
            self.arrays[shard] = array
            for key, start, frames in zip(index.keys, index.starts, index.frames):
                self.index[key] = (shard, start, frames)

    def _open(self, data_path: Path, index: ShardIndex) -> np.ndarray:
        """The shard's data, memory-mapped; ValueError saying why it cannot be trusted."""
        if index.store != self.folder.name:
            raise ValueError(f"it belongs to store {index.store}, not {self.folder.name}: copied in from another folder?")
        if not data_path.is_file():
            raise ValueError("data file missing")
        size = data_path.stat().st_size
        if size != index.bytes:
            raise ValueError(f"{size} bytes, the index says {index.bytes}")
        if file_sha256(data_path) != index.sha256:
            raise ValueError("checksum mismatch")
        array = np.load(data_path, mmap_mode="r")
        rows = sum(index.frames)
        expected = torch.empty((), dtype=numpy_storage(self.dtype)).numpy().dtype
        if array.ndim != 3 or array.shape[0] != rows or array.dtype != expected:
            raise ValueError(f"data of shape {array.shape} and dtype {array.dtype}, the index says {rows} rows of {expected}")
        return array

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def get(self, key: str) -> torch.Tensor:
        shard, start, frames = self.index[key]
        rows = np.array(self.arrays[shard][start : start + frames])  # a copy: the map stays read-only
        return torch.from_numpy(rows).view(self.dtype)

    @property
    def pending_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.pending)

    def add(self, keys: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
        self.pending_keys.extend(keys)
        self.pending.extend(tensors)
        if self.pending_bytes >= SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the pending utterances as one shard: data first, then its index (the commit).
        A failure (a full disk) leaves no file of the shard behind and raises."""
        if not self.pending:
            return
        frames = [int(t.shape[0]) for t in self.pending]
        starts = np.concatenate([[0], np.cumsum(frames)[:-1]]).tolist()
        data = torch.cat(self.pending).contiguous().view(numpy_storage(self.dtype)).numpy()
        digest = hashlib.sha1("".join(self.pending_keys).encode()).hexdigest()[:8]
        shard = f"shard-{self.writer}-{os.getpid()}-{self.written:05d}-{digest}"
        data_path, meta_path = self.folder / f"{shard}.npy", self.folder / f"{shard}.json"
        write_atomic(data_path, lambda stream: np.save(stream, data))
        index = ShardIndex(self.folder.name, self.pending_keys, starts, frames, data_path.stat().st_size, file_sha256(data_path))
        try:
            write_atomic(meta_path, lambda stream: stream.write(json.dumps(asdict(index)).encode()))
        except BaseException:
            data_path.unlink(missing_ok=True)
            raise
        self.written += 1
        self.pending_keys, self.pending = [], []
        self.reload()

    def keep(self) -> str:
        """Write what is pending (on an interrupt); says where the utterances are."""
        self.flush()
        return f"in {self.folder}"


class MemoryStore:
    """Utterance key -> (frames, states, hidden) tensor in this process's memory, on top of the
    shards ``folder`` already holds on disk, if any (e.g. kept by an interrupted run): those are
    read from there, not extracted again."""

    def __init__(self, folder: Optional[Path] = None, dtype: torch.dtype = torch.float32):
        self.items: dict[str, torch.Tensor] = {}
        self.folder = None if folder is None else Path(folder)
        self.dtype = dtype
        self.disk = DiskStore(self.folder, dtype) if self.folder is not None and self.folder.is_dir() else None

    def __contains__(self, key: str) -> bool:
        return key in self.items or (self.disk is not None and key in self.disk)

    def get(self, key: str) -> torch.Tensor:
        return self.items[key] if key in self.items else self.disk.get(key)

    def add(self, keys: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
        self.items.update(zip(keys, tensors))

    def flush(self) -> None:
        pass

    def keep(self) -> str:
        """Write the utterances extracted so far to ``folder`` (on an interrupt), where the next
        run reads them; says where they are."""
        if self.folder is None:
            return "nowhere (a memory cache without a folder)"
        disk = self.disk if self.disk is not None else DiskStore(self.folder, self.dtype)
        disk.add(list(self.items), list(self.items.values()))
        return disk.keep()
