"""Every file, folder and Python name the documentation cites exists in a fresh clone: paths in
backquotes or links (relative to the repository or to the document), and dotted names of the
project's modules (``utility.process_defaults.apply_cli_process_defaults``)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from test_layering import MODULES, defined_names

PACKAGES = ("utility", "upstream", "corpora", "pretrain", "downstream", "analysis")
PATH = re.compile(r"(?<!s3prl )`([a-z_]+(?:/[A-Za-z0-9_.\-]+)+/?)`|\]\(([^)#:]+)(?:#[^)]*)?\)")
DOTTED = re.compile(rf"`(?:python -m )?((?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
OUTPUTS = ("result/",)  # what the commands write, not part of a clone


def documents() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [REPO / name for name in listed.stdout.split()]


def resolves(dotted: str) -> bool:
    """``a.b.c.name``: the longest module prefix exists and binds the next name (the rest, if
    any, is an attribute of that name and not checked)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        if module in MODULES:
            return cut == len(parts) or parts[cut] in defined_names(MODULES[module])
    return False


def test_every_path_a_document_cites_exists():
    missing = []
    for doc in documents():
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for match in PATH.finditer(line):
                cited = match.group(1) or match.group(2)
                if cited.startswith(OUTPUTS) or "://" in cited:
                    continue
                if not ((REPO / cited).exists() or (doc.parent / cited).exists()):
                    missing.append(f"{doc.relative_to(REPO)}:{number}: {cited}")
    assert not missing, "\n".join(missing)


def test_every_python_name_a_document_cites_exists():
    missing = [
        f"{doc.relative_to(REPO)}:{number}: {name}"
        for doc in documents()
        for number, line in enumerate(doc.read_text().splitlines(), 1)
        for name in DOTTED.findall(line)
        if not name.endswith((".py", ".md", ".yaml")) and not resolves(name)
    ]
    assert not missing, "\n".join(missing)


def test_the_checks_see_a_stale_reference():
    assert resolves("utility.process_defaults.apply_cli_process_defaults") and resolves("downstream.experiment")
    assert not resolves("utility.analysis.feature_cache.CachedUpstream")
    assert PATH.search("see `tests/test_downstream.py` for") and not PATH.search("s3prl `downstream/asr`")
