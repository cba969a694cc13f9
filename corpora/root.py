"""Where a task's corpus lives: a LibriSpeech-layout root, by default the bundled demo corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

DEMO_ROOT = Path(__file__).resolve().parent.parent / "data" / "demo"


def resolve_root(root: Optional[str]) -> Path:
    """``None`` -> the demo corpus shipped in ``data/demo``; otherwise the given folder."""
    path = DEMO_ROOT if root is None else Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"corpus root not found: {path}; set data.root to a LibriSpeech-layout folder "
            "(e.g. -o data.root=/path/to/LibriSpeech)"
        )
    return path
