"""Our checkpoint format: plain data (tensors, dicts, numbers, strings), written atomically.

A checkpoint is a dict::

    {"format": "mam-checkpoint", "version": 1,
     "upstream": {"name": ..., "config": UpstreamConfig.to_dict(), "state_dict": {...}},
     "head": {...} (optional), "metadata": {...}, ...}

Pretraining adds optimizer, scheduler, step and RNG states beside these keys. Everything
loads with ``torch.load(weights_only=True)``: no code in a file is ever executed. Every file
written here carries a checksum of its tensors, verified on reading (``utility.integrity``); the file I/O is ``utility.checkpoint_file``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
