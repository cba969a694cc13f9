"""No command writes over one of its own inputs, and a wrong kind of path (a folder for a file, a
file for a folder, a URL for a file) is named as such: one line, exit 2, inputs untouched.
Issue 19, cases 12, 13 and 19."""

from __future__ import annotations

import errno
import os
import subprocess

import matplotlib.pyplot as plt
import pytest
import torch

import hub
import run_downstream
import run_pretrain
from analysis.plotting import save_figure
from conftest import REPO, tiny_config
from faults import assert_one_line_error, mount_tiny_disk
from upstream import FrontendConfig, Upstream, save_upstream
from utility.cli import run_cli

AUDIO = next((REPO / "data" / "demo" / "dev-clean").rglob("*.flac"))


def one_line_exit_2(main, args, capsys, *expected: str) -> str:
    with pytest.raises(SystemExit) as stop:
        run_cli(main, [str(arg) for arg in args])
    assert stop.value.code == 2
    return assert_one_line_error(capsys.readouterr().err, *expected)


@pytest.fixture
def exportable(tmp_path):
    """One of our checkpoints that s3prl can express (R = 1, log-mel), so export would write it."""
    frontend = FrontendConfig(feature="logmel", n_mels=80, delta_order=0, cmvn=False, target_level_db=-25.0, target="mel")
    config = tiny_config("mockingjay", input_dim=frontend.feature_dim, downsample_rate=1)
    config.frontend = frontend
    torch.manual_seed(0)
    return save_upstream(Upstream(config), tmp_path / "ours.ckpt", name="tiny")


def test_export_refuses_to_write_over_its_input_however_the_path_is_spelt(exportable, tmp_path, capsys, monkeypatch):
    original = exportable.read_bytes()
    (tmp_path / "link.ckpt").symlink_to(exportable)
    os.link(exportable, tmp_path / "hard.ckpt")
    monkeypatch.chdir(tmp_path)
    for output in (exportable, tmp_path / "link.ckpt", tmp_path / "hard.ckpt", "ours.ckpt", tmp_path / "." / "ours.ckpt"):
        one_line_exit_2(
            hub._main, ["export", "-k", exportable, "-o", output], capsys, f"-o {output} is one of this command's inputs"
        )
    assert exportable.read_bytes() == original
    hub._main(["export", "-k", str(exportable), "-o", str(tmp_path / "s3prl.ckpt")])  # another file is fine
    assert (tmp_path / "s3prl.ckpt").is_file()


def test_export_to_a_folder_names_the_folder_not_a_temporary_file(exportable, tmp_path, capsys):
    line = one_line_exit_2(
        hub._main, ["export", "-k", exportable, "-o", tmp_path], capsys, f"{tmp_path} is a folder; give a file name"
    )
    assert ".tmp" not in line and not list(tmp_path.glob(".*.tmp"))


@pytest.fixture(scope="module")
def probe_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe") / "exp"
    run_downstream.main(
        [
            "-u",
            "fbank",
            "-d",
            "speaker_utterance",
            "-p",
            str(folder),
            "-o",
            "runner.total_steps=2",
            "runner.eval_step=2",
            "runner.batch_size=3",
            "runner.eval_batch_size=12",
        ]
    )
    return folder


def test_inference_refuses_an_output_that_is_an_input(probe_folder, tmp_path, capsys):
    audio = tmp_path / "audio.flac"
    audio.write_bytes(AUDIO.read_bytes())
    (tmp_path / "alias.flac").symlink_to(audio)
    for output in (audio, tmp_path / "alias.flac"):
        one_line_exit_2(
            run_downstream.main,
            ["-m", "inference", "-e", probe_folder, "-i", AUDIO, audio, "--output", output],
            capsys,
            f"--output {output} is one of this command's inputs ({audio})",
        )
    assert audio.read_bytes() == AUDIO.read_bytes()
    best = probe_folder / "best.ckpt"
    before = best.read_bytes()
    one_line_exit_2(
        run_downstream.main,
        ["-m", "inference", "-e", probe_folder, "-i", AUDIO, "--output", best],
        capsys,
        f"--output {best} is one of this command's inputs",
    )
    assert best.read_bytes() == before


def test_a_folder_given_as_a_checkpoint_names_the_newest_checkpoint_inside(probe_folder, tmp_path, capsys):
    one_line_exit_2(
        run_downstream.main,
        ["-k", probe_folder, "-d", "speaker_frame", "-p", tmp_path / "out"],
        capsys,
        f"{probe_folder} is a folder, not a checkpoint file: give the .ckpt file inside it (the newest there: {probe_folder}/",
    )
    one_line_exit_2(
        hub._main,
        ["aalbert_3L", "-k", tmp_path, str(AUDIO)],
        capsys,
        f"{tmp_path} is a folder, not a checkpoint file",
        "(it holds no .ckpt file)",
    )
    assert not (tmp_path / "out").exists()


def test_a_url_as_ckpt_says_urls_are_not_taken(tmp_path):
    for entry in ("aalbert_3L", "wav2vec2_base"):
        with pytest.raises(
            ValueError, match=r"ckpt='https://example.com/m.ckpt' is a URL; ckpt takes a local file: download it first"
        ):
            torch.hub.load(str(REPO), entry, source="local", ckpt="https://example.com/m.ckpt")


def test_a_file_given_as_experiment_folder_is_named(tmp_path, capsys):
    blocked = tmp_path / "notes.txt"
    blocked.write_text("my notes\n")
    one_line_exit_2(
        run_pretrain.main, ["-u", "aalbert_3L", "-p", blocked], capsys, f"{blocked} is a file, not an experiment folder"
    )
    one_line_exit_2(
        run_downstream.main,
        ["-u", "fbank", "-d", "speaker_frame", "-p", blocked],
        capsys,
        f"{blocked} is a file, not an experiment folder",
    )
    assert blocked.read_text() == "my notes\n"


def test_a_full_disk_while_writing_a_plot_names_it_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    disk = tmp_path / "disk"
    if mount_tiny_disk(disk, "64k"):  # a real full disk: most of it taken, the PNG does not fit
        (disk / "filler").write_bytes(bytes(60 * 1024))
    else:

        def no_space(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")  # as the PNG writer reports it: no file name

        monkeypatch.setattr(plt.Figure, "savefig", no_space)
    figure = plt.figure(figsize=(8, 6))
    figure.gca().imshow(torch.rand(200, 200).numpy())
    try:
        with pytest.raises(OSError, match="No space left on device") as error:
            save_figure(figure, disk / "plot.png")
        assert error.value.filename == str(disk / "plot.png")
        assert sorted(p.name for p in disk.iterdir()) == ["filler"] or not (disk / "filler").exists()
        assert not list(disk.glob("*.png")) and not plt.fignum_exists(figure.number)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
