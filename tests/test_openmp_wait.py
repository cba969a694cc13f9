"""The commands choose OpenMP's passive wait policy before torch loads (utility/openmp_wait.py):
each command file, run as a command, imports the module early enough; a value the user set
wins; importing the library from another program sets nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from utility.openmp_wait import COMMANDS, WAIT_POLICY_ENV

# Runs a command as ``python FILE.py --help`` or ``python -m MODULE --help`` would, then reports
# the environment it left and what the module chose (None: too late, torch had loaded).
PROBE = """
import os, runpy, sys
name = sys.argv[1]
sys.argv = [name, "--help"]
try:
    if "." in name:
        runpy.run_module(name, run_name="__main__", alter_sys=True)
    else:
        path = "scripts/benchmark_drift.py" if name == "benchmark_drift" else name + ".py"
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
    assert run_probe(PROBE, "run_pretrain", OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "None"]


def test_importing_the_library_elsewhere_sets_nothing():
    code = (
        "import os, analysis.report, run_downstream; from utility import openmp_wait; "
        "print(os.environ.get('OMP_WAIT_POLICY'), openmp_wait.CHOSEN)"
    )
    assert run_probe(code) == ["None", "None"]
