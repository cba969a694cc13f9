"""One live run per experiment folder: two real processes on one folder, and a lock left by a
run that was killed."""

from __future__ import annotations

import os
import signal

import pytest

import run_downstream
from conftest import REPO, overrides
from faults import assert_one_line_error, run_command, start, wait_for

PROBE = [
    "-u",
    "fbank",
    "-d",
    "speaker_frame",
    "-o",
    "runner.batch_size=2",
    "runner.eval_step=100000",
    "runner.save_step=100000",
    "runner.log_step=1000",
]


def test_a_second_pretraining_run_on_a_busy_folder_stops_at_once_naming_the_owner(tmp_path):
    folder = tmp_path / "run"
    run = [
        str(REPO / "run_pretrain.py"),
        "-u",
        "aalbert_3L",
        "-p",
        str(folder),
        *overrides("corpus.dev_subsets=[]", "runner.total_steps=5000"),
    ]
    first = start(run, tmp_path)
    try:
        wait_for(folder, "train.log", first)  # the first run is training
        second = run_command([*run, "--stop-at-step", "2"], cwd=tmp_path)
        assert first.poll() is None  # still running: the two really overlapped
        assert second.returncode == 2, second.stderr[-3000:]
        assert_one_line_error(second.stderr, f"{folder} is in use by PID {first.pid} on ", "run_pretrain.py -u aalbert_3L")
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 130, stderr[-3000:]  # stopped with a checkpoint of its own
    assert len(list(folder.glob("states-*.ckpt"))) == 1 and not (folder / ".lock").exists()


def test_a_second_probing_run_stops_and_a_killed_runs_lock_is_taken_over(tmp_path):
    folder = tmp_path / "probe"
    run = [str(REPO / "run_downstream.py"), "-p", str(folder), *PROBE]
    first = start([*run, "runner.total_steps=5000"], tmp_path)
    try:
        wait_for(folder, "log", first)  # the first run is training
        second = run_command([*run, "runner.total_steps=2"], cwd=tmp_path)
        assert first.poll() is None
        assert second.returncode == 2, second.stderr[-3000:]
        assert_one_line_error(second.stderr, f"{folder} is in use by PID {first.pid} on ")
        assert not (folder / "results.json").exists()
    finally:
        os.kill(first.pid, signal.SIGKILL)  # dies holding the lock, without a checkpoint
        first.communicate(timeout=60)
    assert (folder / ".lock").is_file()
    with pytest.warns(UserWarning, match=rf"taking over the lock left by PID {first.pid} on .* no longer running"):
        results = run_downstream.main([*PROBE, "runner.total_steps=2", "-p", str(folder)])
    assert results["steps"] == 2 and not (folder / ".lock").exists()
