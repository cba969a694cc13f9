"""Pretraining faults: damaged newest checkpoints on -e, Ctrl-C during training, a full disk."""

from __future__ import annotations

import errno
import re
import signal
import struct
import subprocess
import time

import pytest
import torch

import run_pretrain
import utility.atomic_write
from conftest import REPO, overrides
from faults import assert_one_line_error, copy_corpus, interrupt_training, mount_tiny_disk, overwrite_tensor_bytes, run_command
from utility.checkpoint_file import read_checkpoint_file, save_atomic

ENCODER = ("upstream", "state_dict", "input_projection.weight")


def same_training_state(a: dict, b: dict) -> bool:
    tensors = [(a["upstream"]["state_dict"], b["upstream"]["state_dict"]), (a["head"], b["head"])]
    if not all(torch.equal(x[key], y[key]) for x, y in tensors for key in x):
        return False
    first, second = a["pretraining"]["optimizer"]["state"], b["pretraining"]["optimizer"]["state"]
    return all(torch.equal(first[i]["exp_avg_sq"], second[i]["exp_avg_sq"]) for i in first)


def test_damaged_newest_checkpoints_are_named_and_the_newest_intact_one_offered(tmp_path):
    folder = tmp_path / "run"
    settings = overrides("corpus.dev_subsets=[]", "runner.total_steps=3", "runner.save_step=1", "runner.max_keep=3")
    run_pretrain.main(["-u", "aalbert_3L", "-p", str(folder), *settings])
    reference = read_checkpoint_file(folder / "states-00000003.ckpt")
    overwrite_tensor_bytes(folder / "states-00000003.ckpt", struct.pack("<2f", float("inf"), float("inf")), ENCODER)
    with pytest.raises(
        ValueError,
        match=r"states-00000003.ckpt is damaged.*newest intact checkpoint is .*states-00000002.ckpt: add --skip-damaged",
    ):
        run_pretrain.main(["-e", str(folder)])
    step2 = folder / "states-00000002.ckpt"
    step2.write_bytes(step2.read_bytes()[: step2.stat().st_size // 2])  # truncated
    with pytest.raises(ValueError, match=r"states-00000003.ckpt is damaged.*newest intact checkpoint is .*states-00000001.ckpt"):
        run_pretrain.main(["-e", str(folder)])
    with pytest.warns(UserWarning, match="states-00000002.ckpt is corrupt or truncated"):
        outcome = run_pretrain.main(["-e", str(folder), "--skip-damaged"])
    assert outcome.finished and outcome.step == 3
    assert same_training_state(read_checkpoint_file(folder / "states-00000003.ckpt"), reference)  # the same run as before
    assert {p.name for p in folder.glob("*.damaged")} == {"states-00000002.ckpt.damaged", "states-00000003.ckpt.damaged"}


def test_ctrl_c_saves_at_the_step_boundary_and_the_run_continues_exactly(tmp_path):
    settings = overrides("corpus.dev_subsets=[]", "runner.total_steps=500", "runner.save_step=2")
    script = str(REPO / "run_pretrain.py")
    folder = tmp_path / "interrupted"
    step, last = interrupt_training([script, "-u", "aalbert_3L", "-p", str(folder), *settings], folder, tmp_path)
    assert last == (
        f"interrupted at step {step}: saved {folder / f'states-{step:08d}.ckpt'}; "
        f"continue with: python run_pretrain.py -e {folder}"
    )
    assert not (folder / ".lock").exists()

    resumed = run_command([script, "-e", str(folder), "--stop-at-step", str(step + 2)], cwd=tmp_path)
    straight = run_command(
        [script, "-u", "aalbert_3L", "-p", str(tmp_path / "straight"), *settings, "--stop-at-step", str(step + 2)], cwd=tmp_path
    )
    assert resumed.returncode == 0 and straight.returncode == 0, resumed.stderr[-2000:] + straight.stderr[-2000:]
    name = f"states-{step + 2:08d}.ckpt"
    assert same_training_state(read_checkpoint_file(folder / name), read_checkpoint_file(tmp_path / "straight" / name))


def test_sigterm_is_ctrl_c_a_checkpoint_no_lock_exit_143_and_the_run_continues(tmp_path):
    script = str(REPO / "run_pretrain.py")
    folder = tmp_path / "terminated"
    args = [
        script,
        "-u",
        "aalbert_3L",
        "-p",
        str(folder),
        *overrides("corpus.dev_subsets=[]", "runner.total_steps=500", "runner.save_step=2"),
    ]
    step, last = interrupt_training(args, folder, tmp_path, signal.SIGTERM)  # checks exit status 143
    assert last.startswith(f"interrupted at step {step}: saved") and (folder / f"states-{step:08d}.ckpt").is_file()
    assert not (folder / ".lock").exists()
    resumed = run_command([script, "-e", str(folder), "--stop-at-step", str(step + 1)], cwd=tmp_path)
    assert resumed.returncode == 0 and (folder / f"states-{step + 1:08d}.ckpt").is_file(), resumed.stderr[-2000:]


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    disk = tmp_path / "disk"
    args = ["-u", "aalbert_3L", "-p", str(disk / "run"), *overrides("corpus.dev_subsets=[]", "runner.total_steps=2")]
    if mount_tiny_disk(disk):  # a real full disk: the config and logs fit, a checkpoint does not
        try:
            done = run_command([str(REPO / "run_pretrain.py"), *args], cwd=tmp_path)
        finally:
            time.sleep(0.5)
            subprocess.run(["umount", str(disk)], check=True)
        assert done.returncode == 2, done.stderr[-3000:]
        stderr = done.stderr
    else:  # no permission to mount: the disk fills up while the checkpoint is synced
        from utility.cli import run_cli

        def no_space(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(utility.atomic_write.os, "fsync", no_space)
        with pytest.raises(SystemExit) as stop:
            run_cli(run_pretrain.main, args)
        assert stop.value.code == 2
        stderr = capsys.readouterr().err
    assert_one_line_error(stderr, "no space left on the device while writing", "states-00000002.ckpt", "free some space")


def test_without_a_held_out_set_best_ckpt_is_the_newest_checkpoint_and_says_so(tmp_path):
    for name, setting in (("no_subsets", "corpus.dev_subsets=[]"), ("no_utterances", "corpus.dev_utterances=0")):
        folder = tmp_path / name
        run_pretrain.main(
            ["-u", "aalbert_3L", "-p", str(folder), *overrides(setting, "runner.total_steps=2", "runner.save_step=1")]
        )
        best = read_checkpoint_file(folder / "best.ckpt")
        assert best["metadata"]["step"] == 2 and best["metadata"]["dev_masked_l1"] is None
        assert best["metadata"]["best_chosen_by"].startswith("none: no held-out set")


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume") / "run"
    run_pretrain.main(["-u", "aalbert_3L", "-p", str(folder), *overrides("runner.total_steps=1")])
    return folder


@pytest.mark.parametrize(
    "change, key",
    [
        (["-o", "runner.seed=7"], "runner.seed: 1337 -> 7"),
        (["--seed", "7"], "runner.seed: 1337 -> 7"),
        (["-o", "masking.proportion=0.2"], "masking.proportion: 0.15 -> 0.2"),
        (["-o", "corpus.dev_utterances=2"], "corpus.dev_utterances: 4 -> 2"),
        (["-o", "corpus.dev_subsets=[]"], "corpus.dev_subsets: ['dev-clean'] -> []"),
        (["-o", "data.max_seconds=5"], "data.max_seconds: 15.0 -> 5.0"),
        # restored from the checkpoint, so the new value would be stored but do nothing
        (["-o", "optimizer.lr=0.1"], "optimizer.lr: 5e-05 -> 0.1"),
        (["-o", "optimizer.weight_decay=0"], "optimizer.weight_decay: 0.01 -> 0"),
    ],
)
def test_resume_refuses_a_changed_seed_mask_or_split_however_given(one_step_run, change, key):
    before = sorted(p.name for p in one_step_run.iterdir())
    with pytest.raises(ValueError, match=rf"cannot resume .*states-00000001.ckpt with other settings for {re.escape(key)}"):
        run_pretrain.main(["-e", str(one_step_run), "-o", "runner.total_steps=2", *change])
    assert sorted(p.name for p in one_step_run.iterdir()) == before  # refused before anything was written


def folder_bytes(folder) -> dict:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def test_a_new_run_refuses_a_folder_holding_only_best_ckpt(tmp_path):
    folder = tmp_path / "run"
    settings = overrides("corpus.dev_subsets=[]", "runner.total_steps=1")
    run_pretrain.main(["-u", "aalbert_3L", "-p", str(folder), *settings])
    for path in folder.glob("states-*.ckpt"):  # deleted to save disk
        path.unlink()
    best = (folder / "best.ckpt").read_bytes()
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder))} holds best.ckpt of an earlier run.*pick another -n/-p"):
        run_pretrain.main(["-u", "aalbert_3L", "-p", str(folder), *overrides("corpus.dev_subsets=[]", "runner.total_steps=2")])
    assert (folder / "best.ckpt").read_bytes() == best


def test_resuming_an_older_checkpoint_names_the_newer_ones_and_writes_nothing(tmp_path):
    folder = tmp_path / "run"
    settings = overrides("corpus.dev_subsets=[]", "runner.total_steps=3", "runner.save_step=1", "runner.max_keep=3")
    run_pretrain.main(["-u", "aalbert_3L", "-p", str(folder), *settings])
    before = folder_bytes(folder)
    with pytest.raises(
        ValueError, match=r"continues from step 1, but .* holds newer checkpoints \(states-00000002.ckpt, states-00000003.ckpt\)"
    ):
        run_pretrain.main(["-e", str(folder / "states-00000001.ckpt")])
    assert folder_bytes(folder) == before
    branch = tmp_path / "branch"  # the fix the message offers: continue a copy elsewhere
    branch.mkdir()
    (branch / "states-00000001.ckpt").write_bytes(before["states-00000001.ckpt"])
    outcome = run_pretrain.main(["-e", str(branch / "states-00000001.ckpt")])
    assert outcome.finished and outcome.step == 3
    branched, original = (read_checkpoint_file(f / "states-00000003.ckpt") for f in (branch, folder))
    assert same_training_state(branched, original)


def test_a_relative_corpus_root_is_stored_absolute_and_read_the_same_from_another_folder(tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    copy_corpus(work, count=12)
    elsewhere.mkdir()
    settings = overrides("corpus.dev_subsets=[]", "corpus.root=corpus", "runner.total_steps=1")
    monkeypatch.chdir(work)
    run_pretrain.main(["-u", "aalbert_3L", "-p", str(tmp_path / "run"), *settings])
    stored = read_checkpoint_file(tmp_path / "run" / "states-00000001.ckpt")
    assert stored["pretraining"]["settings"]["corpus"]["root"] == str(work / "corpus")
    monkeypatch.chdir(elsewhere)  # no corpus/ here: the run still reads its own
    assert run_pretrain.main(["-e", str(tmp_path / "run"), "-o", "runner.total_steps=2"]).step == 2

    # A run stored before roots were made absolute: resolved from the current folder, and
    # refused, naming the path, where nothing is there.
    old = tmp_path / "old"
    old.mkdir()
    stored["pretraining"]["settings"]["corpus"]["root"] = "corpus"
    save_atomic(stored, old / "states-00000001.ckpt")
    with pytest.raises(FileNotFoundError, match=rf"corpus.root='corpus' points to {re.escape(str(elsewhere / 'corpus'))}, which"):
        run_pretrain.main(["-e", str(old), "-o", "runner.total_steps=2"])
    assert not (old / "states-00000002.ckpt").exists()
    monkeypatch.chdir(work)
    assert run_pretrain.main(["-e", str(old), "-o", "runner.total_steps=2"]).step == 2
    assert read_checkpoint_file(old / "states-00000002.ckpt")["pretraining"]["settings"]["corpus"]["root"] == str(work / "corpus")
