"""Fetching published checkpoints into torch.hub's cache, once.

A file is downloaded to a temporary name in the cache folder and renamed only when every byte
has arrived, so an interrupted download never leaves a file that looks complete. Later loads
find the file and make no request.

Environment:
    MAM_CHECKPOINT_MIRROR=http://HOST:PORT[/PREFIX]  replaces the scheme and host of every
        catalogue URL (path and query kept, PREFIX put in front of the path), as HF_ENDPOINT
        does for HuggingFace: for a local mirror or a machine behind a proxy.
    MAM_OFFLINE=1  forbids network access: a file not in the cache is an error that names the
        URL, the cache path to place the file at by hand, and the ckpt=PATH alternative.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from utility.atomic_write import atomic_write


class Published(Protocol):
    """What a download needs of a published file (``upstream.catalogue.PublishedCheckpoint``)."""

    name: str  # also the file name in the cache
    short_name: str
    url: str


MIRROR_VARIABLE = "MAM_CHECKPOINT_MIRROR"
OFFLINE_VARIABLE = "MAM_OFFLINE"
TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class CheckpointDownloadError(RuntimeError):
    """A published checkpoint is not in the cache and could not be fetched."""


def offline() -> bool:
    """True when MAM_OFFLINE asks for no network access."""
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def mirrored_url(url: str) -> str:
    """``url`` with the scheme and host of MAM_CHECKPOINT_MIRROR, if set (path and query kept)."""
    mirror = os.environ.get(MIRROR_VARIABLE, "").strip()
    if not mirror:
        return url
    base = urllib.parse.urlsplit(mirror)
    if not base.scheme or not base.netloc:
        raise ValueError(f"{MIRROR_VARIABLE}={mirror!r} is not a URL; expected e.g. http://127.0.0.1:8000")
    original = urllib.parse.urlsplit(url)
    path = base.path.rstrip("/") + original.path
    return urllib.parse.urlunsplit((base.scheme, base.netloc, path, original.query, ""))


def cache_path(checkpoint: Published) -> Path:
    """Where the file lives: torch.hub's checkpoint folder, under s3prl's full name (several
    published files share the base name ``states-1000000.ckpt``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{checkpoint.name}.ckpt"


def _unavailable(checkpoint: Published, url: str, reason: str) -> CheckpointDownloadError:
    path = cache_path(checkpoint)
    return CheckpointDownloadError(
        f"published checkpoint '{checkpoint.short_name}' is not in the cache and {reason}. "
        f"Download {url} by other means and place it at {path}, or pass ckpt=PATH to a copy of the file"
    )


def fetch(checkpoint: Published, refresh: bool = False) -> Path:
    """The cached file of ``checkpoint``, downloaded first if it is missing (or ``refresh``)."""
    path = cache_path(checkpoint)
    if path.is_file() and not refresh:
        return path
    url = mirrored_url(checkpoint.url)
    if offline():
        raise _unavailable(checkpoint, url, f"network access is off ({OFFLINE_VARIABLE}=1)")
    try:
        with atomic_write(path, suffix=".part") as stream:
            _download(url, stream, checkpoint.short_name)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        hint = "" if url != checkpoint.url else f" (or set {MIRROR_VARIABLE}=http://HOST:PORT to use a mirror)"
        raise _unavailable(checkpoint, url, f"downloading it failed: {error}{hint}") from error
    return path


def _download(url: str, stream, label: str) -> None:
    """Copy ``url`` into ``stream`` with a progress bar; a short transfer raises."""
    request = urllib.request.Request(url, headers={"User-Agent": "mam-upstream"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        header = response.headers.get("Content-Length")
        expected = int(header) if header is not None else None
        received = 0
        with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {label}") as bar:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                stream.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received != expected:
        raise OSError(f"the transfer broke off after {received} of {expected} bytes")
    if received == 0:
        raise OSError("the server sent an empty file")
