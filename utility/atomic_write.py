"""Files that are either the old version or the whole new one, never half written.

Every file a run keeps (checkpoints, results, cache indexes, figures, downloads) is written
through :func:`atomic_write`: to a temporary name in the same folder, flushed and fsync'd, then
renamed over the target. A crash or a full disk mid-write leaves the previous file intact
and no temporary file behind (a ``kill -9`` can leave one: ``.NAME.*.tmp`` beside the target).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", suffix: str = TEMP_SUFFIX) -> Iterator[IO]:
    """Open a temporary file for writing (``mode`` ``"wb"`` or ``"w"``) that replaces ``path``
    when the block ends without an exception; on an exception it is removed instead.
    A full disk raises ``OSError(ENOSPC)`` naming ``path``."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes new files: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)
        with os.fdopen(handle, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException as error:
        Path(temp_name).unlink(missing_ok=True)
        full = disk_full(error)
        if full is not None:
            raise OSError(full.errno, full.strerror, str(path)) from error
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``path.write_text(text)``, atomically."""
    with atomic_write(path, "w") as stream:
        stream.write(text)
    return Path(path)


def disk_full(error: BaseException) -> OSError | None:
    """The out-of-space OSError behind ``error``: torch.save reports a failed write as a
    RuntimeError ("unexpected pos ...") whose context is the OSError."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        error = error.__cause__ or error.__context__
    return None
