"""Checkpoint files: ``torch.save`` written atomically with a checksum of its tensors and a
digest of every byte (the seal, ``utility.integrity``), read with
``torch.load(weights_only=True)`` (no code in a file is ever executed) and verified
(``utility.integrity``). What a checkpoint holds is for its format to say (ours:
``upstream.checkpoint``, probes: ``downstream.probe_checkpoint``, s3prl's: ``upstream.s3prl``).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .atomic_write import atomic_write
from .integrity import DamagedCheckpoint, SealingWriter, verify_integrity, verify_seal, with_checksum

# torch.save writes zip archives; files from before torch 1.6 start with this pickled magic number.
_LEGACY_TORCH_PREFIX = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


def save_atomic(payload: dict[str, Any], path: str | Path) -> Path:
    """torch.save (with the checksum of its tensors, sealed with the digest of its bytes) through :func:`atomic_write`: a crash
    mid-write leaves the previous file intact. A full disk raises ``OSError(ENOSPC)`` naming ``path``."""
    if Path(path).is_dir():
        raise IsADirectoryError(
            f"{path} is a folder; give a file name to write the checkpoint to (e.g. {Path(path) / 'model.ckpt'})"
        )
    payload = with_checksum(payload)
    with atomic_write(path) as stream:
        writer = SealingWriter(stream)
        torch.save(payload, writer)
        writer.seal()
    return Path(path)


def torch_save_format(path: Path) -> str:
    """``"zip"`` (torch.save since torch 1.6) or ``"legacy"`` (older torch.save), from the
    first bytes; raises FileNotFoundError / ValueError for anything else."""
    if path.is_dir():
        newest = max(path.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, default=None)
        hint = f" (the newest there: {newest})" if newest is not None else " (it holds no .ckpt file)"
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint file: give the .ckpt file inside it{hint}")
    if not path.is_file():
        # A relative path is read from the working directory, which a user in another folder may not expect.
        where = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        raise FileNotFoundError(f"checkpoint not found: {path}{where}")
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
    if path.is_file() and path.stat().st_size:
        verify_seal(path)  # first: a changed byte is named as such, whatever else it breaks
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
