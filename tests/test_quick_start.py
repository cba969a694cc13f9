"""The README's quick start is what CI runs, verbatim, and its probe is one that learns on the
demo data (phone_linear: a linear classifier on every frame; the speaker probes stay at chance
with a barely pretrained model, whose input features are normalised per utterance)."""

from __future__ import annotations

import re

from conftest import REPO


def quick_start(text: str) -> str:
    commands = re.findall(r"^pip install -r requirements\.txt && .+$", text, flags=re.MULTILINE)
    assert len(commands) == 1, commands
    return commands[0]


def test_ci_runs_the_readme_quick_start_verbatim():
    readme = quick_start((REPO / "README.md").read_text())
    assert readme == quick_start((REPO / ".ci" / "run").read_text())
    assert readme.endswith("-d phone_linear")
