"""Our checkpoint format: plain data (tensors, dicts, numbers, strings), written atomically.

A checkpoint is a dict::

    {"format": "mam-checkpoint", "version": 1,
     "upstream": {"name": ..., "config": UpstreamConfig.to_dict(), "state_dict": {...}},
     "head": {...} (optional), "metadata": {...}, ...}

Pretraining adds optimizer, scheduler, step and RNG states beside these keys. Everything
loads with ``torch.load(weights_only=True)``: no code in a file is ever executed. Every file
written here carries a checksum of its tensors, verified on reading (``utility.integrity``);
the file I/O is ``utility.checkpoint_file``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from utility.checkpoint_file import save_atomic

from .config import UpstreamConfig
from .model import Upstream

FORMAT = "mam-checkpoint"
VERSION = 1


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


def read_own_checkpoint(data: dict[str, Any], path: str | Path) -> tuple[UpstreamConfig, dict[str, Any]]:
    """The config and encoder state dict of one of our checkpoint dicts (read from ``path``)."""
    check_own_checkpoint(data, path)
    section = data["upstream"]
    return UpstreamConfig.from_dict(section["config"], source=f"{path}:upstream.config"), section["state_dict"]


def upstream_checkpoint(model: Upstream, name: str, metadata: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The plain-data checkpoint dict for ``model`` (extend it with training state as needed)."""
    state = {} if model.encoder is None else {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()}
    return {
        "format": FORMAT,
        "version": VERSION,
        "upstream": {"name": name, "config": model.config.to_dict(), "state_dict": state},
        "metadata": dict(metadata or {}),
    }


def save_upstream(model: Upstream, path: str | Path, name: str, metadata: Optional[dict[str, Any]] = None) -> Path:
    """Write ``model`` as a loadable checkpoint, atomically."""
    return save_atomic(upstream_checkpoint(model, name, metadata), path)
