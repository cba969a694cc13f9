"""The commands choose OpenMP's passive wait policy before torch loads (utility/openmp_wait.py):
each command file, run as a command, imports the module early enough; a value the user set
wins; importing the library from another program sets nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from test_layering import MODULES
from utility.openmp_wait import COMMANDS, WAIT_POLICY_ENV

# Runs a command file as ``python -m PACKAGE.MODULE --help`` (in a package) or ``python FILE
# --help`` would, then reports the environment it left and what the module chose (None: nothing,
# e.g. torch had loaded already).
PROBE = """
import os, runpy, sys
path = sys.argv[1]
sys.argv = [path, "--help"]
try:
    if path.startswith("analysis/"):
        runpy.run_module(path[:-3].replace("/", "."), run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(path, run_name="__main__")
except SystemExit:
    pass
from utility import openmp_wait
print(os.environ.get("OMP_WAIT_POLICY"), openmp_wait.CHOSEN)
"""


def run_probe(code: str, *args: str, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != WAIT_POLICY_ENV}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env={**clean, **env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-2:]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_chooses_the_policy_before_torch_loads(command):
    assert run_probe(PROBE, command) == ["PASSIVE", "PASSIVE"]


def test_the_users_policy_wins():
    assert run_probe(PROBE, "run_pretrain.py", OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "None"]


def test_the_list_of_commands_is_the_files_that_import_the_module():
    files = [*MODULES.values(), *(REPO / "scripts").glob("*.py")]
    importing = {path.relative_to(REPO).as_posix() for path in files if "import utility.openmp_wait" in path.read_text()}
    assert importing == set(COMMANDS)


def test_importing_the_library_elsewhere_sets_nothing():
    code = (  # a program of the user's (here: -c) that imports command modules
        "import os, analysis.report, run_downstream; from utility import openmp_wait; "
        "print(os.environ.get('OMP_WAIT_POLICY'), openmp_wait.CHOSEN)"
    )
    assert run_probe(code) == ["None", "None"]
