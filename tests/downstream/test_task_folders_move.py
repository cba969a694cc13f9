"""Task folders are drop-in: copied to another ``--tasks-dir``, ``asr_ctc`` and ``phone_ctc`` train
there with the shipped task folders made unimportable, so neither leans on another task folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from downstream.discovery import TASKS_DIR, task_folders

# Run in a fresh interpreter in which importing any shipped task folder as a module
# (downstream.<task>...) fails: the copies must get by with the core.
RUNNER = """
import importlib.abc, sys
TASKS = set(sys.argv[1].split(","))

class RefuseTaskFolders(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        parts = name.split(".")
        if parts[0] == "downstream" and len(parts) > 1 and parts[1] in TASKS:
            raise ImportError(f"{name}: a task folder imported another task folder")
        return None

sys.meta_path.insert(0, RefuseTaskFolders())
import run_downstream
run_downstream.main(sys.argv[2:])
"""

TINY = ["runner.total_steps=2", "runner.eval_step=2", "runner.log_step=1", "runner.batch_size=3",
        "runner.eval_batch_size=12", "expert.rnn_hidden=8"]


@pytest.mark.parametrize("task", ["asr_ctc", "phone_ctc"])
def test_a_task_folder_trains_from_another_tasks_dir(task, tmp_path):
    tasks = tmp_path / "tasks"
    for name in ("asr_ctc", "phone_ctc"):
        shutil.copytree(TASKS_DIR / name, tasks / name)
    expdir = tmp_path / "exp"
    shipped = ",".join(task_folders(TASKS_DIR))
    args = ["-u", "fbank", "-d", task, "--tasks-dir", str(tasks), "-p", str(expdir), "-o", *TINY]
    done = subprocess.run([sys.executable, "-c", RUNNER, shipped, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((expdir / "results.json").read_text())
    assert results["task"] == task and results["steps"] == 2
    assert results["metric"] == {"asr_ctc": "cer", "phone_ctc": "per"}[task]  # asr_ctc's demo config selects by CER
