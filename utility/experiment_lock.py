"""One live run per experiment folder.

A run takes :class:`ExperimentLock` on its folder before it writes anything there. The lock is
an exclusive ``flock`` on ``FOLDER/.lock``, a file that also names its owner (PID, host, start
time, command line). A second run on the folder stops at once with an error naming that owner.
The kernel drops the ``flock`` when its process dies, however it dies; a lock file left behind
by a dead run is therefore taken over, with a notice naming the run that left it.

    with ExperimentLock(folder):
        ...  # write config, checkpoints, logs
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

LOCK_NAME = ".lock"


class ExperimentInUse(ValueError):
    """Another live run holds the experiment folder."""


def _describe(owner: dict[str, Any]) -> str:
    if not owner:
        return "another process (it is just starting)"
    return f"PID {owner.get('pid')} on {owner.get('host')} (started {owner.get('started')}: {owner.get('command')})"


def _read_owner(fd: int) -> dict[str, Any]:
    text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if not text:
        return {}
    try:
        owner = json.loads(text)
    except ValueError:
        return {"pid": "?", "host": "?", "started": "?", "command": text[:200]}
    return owner if isinstance(owner, dict) else {}


def _is_current(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path``."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino)


class ExperimentLock:
    """Exclusive ownership of ``folder`` (created if needed) by this process."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: Optional[int] = None
        self._created_folder = False

    def acquire(self) -> "ExperimentLock":
        if self.folder.exists() and not self.folder.is_dir():
            raise NotADirectoryError(
                f"{self.folder} is a file, not an experiment folder; give the path of a folder (new or existing)"
            )
        self._created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise ExperimentInUse(
                    f"{self.folder} is in use by {_describe(owner)}; wait for that run to end, "
                    "or give this one another name (-n) or folder (-p)"
                ) from None
            if _is_current(fd, self.path):
                break
            os.close(fd)  # its owner removed the file while releasing it: lock the one there now
        stale = _read_owner(fd)
        if stale:
            warnings.warn(
                f"{self.folder}: taking over the lock left by {_describe(stale)}, which is no longer running",
                stacklevel=2,
            )
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file (while still holding the lock, so no one takes a dead inode),
        and the folder too when this run created it and left it empty."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        if self._created_folder and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def __enter__(self) -> "ExperimentLock":
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
