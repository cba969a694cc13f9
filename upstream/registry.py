"""Named upstreams. Registration validates a name at import time (a Python identifier, not
taken). ``hub.py`` writes one plain function per registered name by hand (torch.hub lists only
functions it can read), and a test checks that its ``ENTRIES`` and ``entry_names()`` agree."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .config import UpstreamConfig


@dataclass(frozen=True)
class UpstreamEntry:
    """A named upstream.

    ``preset`` builds the configuration used without a checkpoint. ``family`` and
    ``num_layers`` are what a checkpoint must match to load under this name (None: anything).
    ``requires`` names optional Python modules this upstream needs; a missing one breaks only
    this entry, with an install hint, never the others. ``builder``, for models that no
    ``UpstreamConfig`` describes (torchaudio's), builds the model from the options of
    ``build_upstream`` (``ckpt``, ``pretrained``, ``precision``, ``max_frames``, ``refresh``).
    """

    name: str
    family: str
    preset: Callable[[], UpstreamConfig]
    description: str
    num_layers: Optional[int] = None
    requires: tuple[str, ...] = ()
    builder: Optional[Callable[..., Any]] = None

    def missing_requirements(self) -> list[str]:
        return [module for module in self.requires if importlib.util.find_spec(module) is None]


_ENTRIES: dict[str, UpstreamEntry] = {}


def register(entry: UpstreamEntry) -> UpstreamEntry:
    """Add an entry; a name that is already taken raises."""
    if not entry.name.isidentifier():
        raise ValueError(f"upstream name {entry.name!r} must be a Python identifier (it becomes a hub entry)")
    if entry.name in _ENTRIES:
        raise ValueError(f"upstream {entry.name!r} is already registered; pick another name")
    _ENTRIES[entry.name] = entry
    return entry


def get_entry(name: str) -> UpstreamEntry:
    if name not in _ENTRIES:
        raise ValueError(f"unknown upstream {name!r}; available: {', '.join(sorted(_ENTRIES))}")
    return _ENTRIES[name]


def entry_names() -> list[str]:
    return sorted(_ENTRIES)
