"""Our checkpoint format: plain data (tensors, dicts, numbers, strings), written atomically.

A checkpoint is a dict::

    {"format": "mam-checkpoint", "version": 1,
     "upstream": {"name": ..., "config": UpstreamConfig.to_dict(), "state_dict": {...}},
     "head": {...} (optional), "metadata": {...}, ...}

Pretraining adds optimizer, scheduler, step and RNG states beside these keys. Everything
loads with ``torch.load(weights_only=True)``: no code in a file is ever executed. Every file
written here carries a checksum of its tensors, verified on reading (``upstream.integrity``).
"""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .integrity import DamagedCheckpoint, verify_integrity, with_checksum

FORMAT = "mam-checkpoint"
VERSION = 1
# torch.save writes zip archives; files from before torch 1.6 start with this pickled magic number.
_LEGACY_TORCH_PREFIX = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


def save_atomic(payload: dict[str, Any], path: str | Path) -> Path:
    """torch.save (with the checksum of its tensors) to a temporary file in the same folder,
    fsync, then rename over ``path``: a crash mid-write leaves the previous file intact.
    A full disk raises ``OSError(ENOSPC)`` naming ``path``."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name to write the checkpoint to (e.g. {path / 'model.ckpt'})")
    payload = with_checksum(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException as error:
        Path(temp_name).unlink(missing_ok=True)
        full = disk_full_error(error, path)
        if full is not None:
            raise full from error
        raise
    return path


def disk_full_error(error: BaseException, path: str | Path) -> OSError | None:
    """An out-of-space OSError naming ``path`` when ``error`` comes from one, else None
    (torch.save and matplotlib report a failed write as another exception, or an OSError
    without the file name, whose cause or context is the OSError)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return OSError(error.errno, error.strerror, str(path))
        error = error.__cause__ or error.__context__
    return None


def torch_save_format(path: Path) -> str:
    """``"zip"`` (torch.save since torch 1.6) or ``"legacy"`` (older torch.save), from the
    first bytes; raises FileNotFoundError / ValueError for anything else."""
    if path.is_dir():
        newest = max(path.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, default=None)
        hint = f" (the newest there: {newest})" if newest is not None else " (it holds no .ckpt file)"
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint file: give the .ckpt file inside it{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise DamagedCheckpoint(f"checkpoint {path} is empty (0 bytes); was its writing interrupted?")
    with open(path, "rb") as stream:
        head = stream.read(len(_LEGACY_TORCH_PREFIX))
    if head.startswith(b"PK\x03\x04"):  # a zip archive, as torch.save writes
        if not zipfile.is_zipfile(path):
            raise DamagedCheckpoint(f"checkpoint {path} is corrupt or truncated (its zip directory is missing); re-save it")
        return "zip"
    if head != _LEGACY_TORCH_PREFIX:
        raise ValueError(f"{path} is not a loadable checkpoint: it is not a file written by torch.save")
    return "legacy"


def read_checkpoint_file(path: str | Path, **load_options: Any) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with clear errors for missing, truncated and foreign files;
    a file failing its checksum or holding NaN/inf raises :class:`DamagedCheckpoint`.

    ``load_options`` are passed to ``torch.load`` (``map_location`` defaults to CPU).
    """
    path = Path(path)
    torch_save_format(path)  # clear errors for missing, empty, truncated and foreign files
    load_options.setdefault("map_location", "cpu")
    try:
        data = torch.load(path, weights_only=True, **load_options)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} is not a loadable checkpoint: it is not a PyTorch file, or it stores Python "
            f"objects that are refused for safety ({error})"
        ) from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise DamagedCheckpoint(f"checkpoint {path} is corrupt or truncated ({error}); re-download or re-save it") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a checkpoint dict")
    verify_integrity(data, path)
    return data


def is_own_checkpoint(data: dict[str, Any]) -> bool:
    return data.get("format") == FORMAT


def check_own_checkpoint(data: dict[str, Any], path: str | Path) -> None:
    if not is_own_checkpoint(data):
        raise ValueError(f"{path} is not a {FORMAT} file (keys: {sorted(map(str, data))[:10]})")
    if data.get("version") != VERSION:
        raise ValueError(f"{path} is {FORMAT} version {data.get('version')}; this code reads version {VERSION}")
    upstream = data.get("upstream")
    if not isinstance(upstream, dict) or not {"config", "state_dict"} <= set(upstream):
        raise ValueError(f"{path} has no 'upstream' section with 'config' and 'state_dict'")
