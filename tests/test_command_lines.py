"""What a new user types: the same -o syntax in both runners, hub.py given only a checkpoint,
the options -h shows, command-line advice in command-line terms, a resume hint on Ctrl-C."""

from __future__ import annotations

import pytest
import torch
import yaml

import hub
import run_pretrain
from analysis import cells, report, tsne
from conftest import REPO, tiny_config
from faults import run_command
from upstream import Upstream, save_upstream
from utility.cli import EXIT_INTERRUPTED, run_cli

AUDIO = str(next((REPO / "data" / "demo" / "dev-clean").rglob("*.flac")))


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    return save_upstream(Upstream(tiny_config(num_layers=3)), tmp_path / "tiny.ckpt", "aalbert_3L")


def test_run_pretrain_takes_several_keys_per_o_and_repeated_o(capsys):
    run_pretrain.main(
        ["-u", "aalbert_3L", "--print-config", "-o", "runner.total_steps=7", "runner.log_step=3", "-o", "data.batch_size=2"]
    )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["runner"]["total_steps"], printed["runner"]["log_step"], printed["data"]["batch_size"]) == (7, 3, 2)


@pytest.mark.parametrize("args", [["from_checkpoint", "-k", "CKPT", AUDIO], ["-k", "CKPT", AUDIO]])
def test_hub_builds_what_a_checkpoint_describes_from_the_command_line(args, tiny_checkpoint, tmp_path):
    done = run_command([str(REPO / "hub.py"), *[str(tiny_checkpoint) if a == "CKPT" else a for a in args]], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "from_checkpoint: 4 hidden states" in done.stdout and f"{AUDIO}:" in done.stdout


def test_the_random_weights_warning_of_a_command_suggests_k(capsys):
    with pytest.warns(UserWarning, match="ckpt=PATH"):  # the library's own wording, for Python users
        hub.build_upstream("aalbert_3L")
    run_cli(hub._main, ["aalbert_3L", AUDIO])
    err = capsys.readouterr().err
    assert "warning: aalbert_3L: no checkpoint given, so the weights are RANDOM; give -k PATH" in err
    assert "ckpt=PATH" not in err and "pretrained=" not in err


def test_tsne_takes_o_as_overrides_like_every_command(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        tsne.main(["-h"])
    assert "-o KEY=VALUE [KEY=VALUE ...]" in capsys.readouterr().out
    picture = tmp_path / "speakers.png"
    args = ["-u", "aalbert_3L", "-k", str(tiny_checkpoint), "-o", f"data.root={REPO / 'data/demo'}", "--output", str(picture)]
    assert tsne.main(args) == picture
    assert picture.stat().st_size > 0
    assert not list(tmp_path.glob("data.root=*")), "no folder named after the override"


def test_ctrl_c_in_a_report_says_how_to_continue(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cells, "run_cell", interrupted)
    with pytest.raises(SystemExit) as stop:
        run_cli(
            report.main,
            [
                "-u",
                "fbank",
                "-d",
                "speaker_frame",
                "-p",
                str(tmp_path / "r"),
                "--stages",
                "weighted_sum",
                "--speed-utterances",
                "1",
            ],
        )
    assert stop.value.code == EXIT_INTERRUPTED
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("interrupted (Ctrl-C); run the same command again to continue") and str(tmp_path / "r") in last


def test_evaluate_takes_several_splits_after_one_t():
    import run_downstream

    parser = run_downstream.build_parser()
    assert parser.parse_args(["-m", "evaluate", "-e", "X", "-t", "dev", "test"]).split == ["dev", "test"]
    assert parser.parse_args(["-m", "evaluate", "-e", "X", "-t", "dev", "-t", "test"]).split == ["dev", "test"]
