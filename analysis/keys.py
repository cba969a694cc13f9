"""What a stored result was made with against what this command asks for: the settings that
differ, named, so that a refusal can say which one (the study's pretraining runs, probe cells).

A key is a nested dict of everything that determines a result (settings, corpus identity,
upstream content); a corpus is identified by its resolved folder, so ``data/demo`` and
``/home/me/repo/data/demo`` are the same corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from corpora.root import DEMO_ROOT
from utility.config import flatten

NOT_RECORDED = "(not recorded)"


def corpus_identity(root: Optional[str | Path]) -> str:
    """A corpus folder as one spelling: resolved, the demo corpus for None (its default)."""
    return str(Path(DEMO_ROOT if root is None else root).expanduser().resolve())


def differences(stored: dict[str, Any], current: dict[str, Any], defaults: Optional[dict[str, Any]] = None) -> list[str]:
    """``"key: stored -> current"`` for every setting that differs, in key order ([]: the same).

    A setting missing from ``stored`` (added to a config since the result was made) counts as
    equal when ``current`` leaves it at its value in ``defaults`` (the same structure without
    any override), so adding a switch does not invalidate finished results.
    """
    before, after, base = flatten(stored), flatten(current), flatten(defaults or {})
    changed = []
    for key in sorted(set(before) | set(after)):
        if key not in before:
            if key in base and after[key] == base[key]:
                continue
            changed.append(f"{key}: {NOT_RECORDED} -> {after[key]!r}")
        elif key not in after:
            changed.append(f"{key}: {before[key]!r} -> (not a setting any more)")
        elif before[key] != after[key]:
            changed.append(f"{key}: {before[key]!r} -> {after[key]!r}")
    return changed
