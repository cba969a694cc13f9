"""One error style for every command: a user's mistake is one line ``error: ...`` naming the
input, exit status 2, nothing written; a bug keeps its traceback; --debug shows it always."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import torch

import hub
import run_downstream
import run_pretrain
from analysis import attention_map, layerwise, proportion, report, tsne
from conftest import REPO, tiny_config
from faults import assert_one_line_error, run_command, write_wav
from upstream import Upstream, save_upstream

AUDIO = str(next((REPO / "data" / "demo" / "dev-clean").rglob("*.flac")))
TASK = ["-u", "fbank", "-d", "speaker_frame"]
PRETRAIN = ["-u", "aalbert_3L", "-p", "OUT"]

# (command, arguments, text the error line must hold); OUT is the experiment folder, TMP the test's folder.
MISTAKES = [
    (
        run_pretrain.main,
        [*PRETRAIN, "-o", "runner.total_steps=many"],
        "runner.total_steps must be int, got 'many'",
    ),
    (run_pretrain.main, [*PRETRAIN, "-o", "runner.total_stepz=5"], "no key 'total_stepz'"),
    (run_pretrain.main, [*PRETRAIN, "-c", "TMP/missing.yaml"], "config file not found"),
    (run_pretrain.main, [*PRETRAIN, "--stop-at-step", "0"], "--stop-at-step must be a step >= 1"),
    (run_pretrain.main, [*PRETRAIN, "--seed", "-1"], "runner.seed (--seed) must be >= 0"),
    (run_pretrain.main, [*PRETRAIN, "-o", "optimizer.lr=0"], "optimizer.lr must be > 0"),
    (run_pretrain.main, ["-u", "mockingjay_9L", "-p", "OUT"], "unknown upstream 'mockingjay_9L'"),
    (run_pretrain.main, [*PRETRAIN, "--stop-at-step", "two"], "invalid int value: 'two'"),
    (run_pretrain.main, [*PRETRAIN, "--bogus"], "unrecognized arguments: --bogus"),
    (run_pretrain.main, ["-e", "TMP/nowhere"], "no such checkpoint file or experiment folder"),
    (run_pretrain.main, [*PRETRAIN, "-o", "corpus.root=TMP/nowhere"], "corpus root not found"),
    (run_downstream.main, [*TASK, "-p", "OUT", "-o", "runner.total_stepz=3"], "no key 'total_stepz'"),
    (run_downstream.main, [*TASK, "-p", "OUT", "-o", "optimizer.lr=0"], "optimizer.lr and upstream_lr must be > 0"),
    (run_downstream.main, [*TASK, "-p", "OUT", "-o", "runner.batch_size=two"], "runner.batch_size must be int"),
    (run_downstream.main, [*TASK, "-p", "OUT", "-o", "runner.on_unreadable=ignore"], "runner.on_unreadable must be one of"),
    (run_downstream.main, [*TASK, "-p", "OUT", "--seed", "-1"], "--seed must be >= 0"),
    (run_downstream.main, [*TASK, "-p", "OUT", "-o", "data.root=TMP/nowhere"], "corpus root not found"),
    (run_downstream.main, ["-u", "fbank", "-d", "phone_linaer", "-p", "OUT"], "unknown task 'phone_linaer'"),
    (run_downstream.main, ["-k", "TMP/missing.ckpt", "-d", "speaker_frame", "-p", "OUT"], "checkpoint not found"),
    (run_downstream.main, ["-k", "TMP/notes.txt", "-d", "speaker_frame", "-p", "OUT"], "not a loadable checkpoint"),
    (run_downstream.main, ["-m", "evaluate", "-e", "TMP/nowhere"], "no such checkpoint file or experiment folder"),
    (run_downstream.main, ["-m", "inference", "-e", "TMP"], "inference needs a trained probe and audio files"),
    (run_downstream.main, [*TASK, "-m", "tune"], "argument -m/--mode: invalid choice: 'tune'"),
    (run_pretrain.main, [*PRETRAIN, "-c", "TMP"], "is a folder; give the YAML file inside it"),
    (run_downstream.main, [*TASK, "-p", "OUT", "-c", "TMP"], "is a folder; give the YAML file inside it"),
    (run_downstream.main, [*TASK, "-p", "OUT", "-o", "expert.hidden_sizes=[-5]"], "hidden_sizes must be layer widths >= 1"),
    (run_downstream.main, [*TASK, "-p", "OUT", "-o", "expert.hidden_sizes=[0]"], "expert.hidden_sizes must be layer widths >= 1"),
    # Non-finite and out-of-range numbers, named by key, before anything is written (issue 19, cases 8 and 17).
    (
        run_pretrain.main,
        [*PRETRAIN, "-o", "runner.gradient_clipping=nan"],
        "runner.gradient_clipping must be a finite number, got nan",
    ),
    (
        run_pretrain.main,
        [*PRETRAIN, "-o", "optimizer.lr=.inf"],
        "optimizer.lr must be a finite number, got inf",
    ),
    (
        run_pretrain.main,
        [*PRETRAIN, "-o", "optimizer.lr=nan"],
        "optimizer.lr must be a finite number, got nan",
    ),
    (
        run_pretrain.main,
        [*PRETRAIN, "-o", "optimizer.betas=[0.9, .nan]"],
        "optimizer.betas must be a finite number, got nan",
    ),
    (
        run_pretrain.main,
        [*PRETRAIN, "-o", "runner.max_minutes=nan"],
        "runner.max_minutes must be a finite number, got nan",
    ),
    (
        run_pretrain.main,
        [*PRETRAIN, "-o", "runner.max_minutes=.inf"],
        "runner.max_minutes must be a finite number, got inf",
    ),
    (
        run_pretrain.main,
        [*PRETRAIN, "-o", "corpus.dev_utterances=-5"],
        "corpus.dev_utterances must be >= 0",
    ),
    (
        run_pretrain.main,
        [*PRETRAIN, "-o", "data.max_seconds=nan"],
        "data.max_seconds must be a finite number, got nan",
    ),
    (run_pretrain.main, [*PRETRAIN, "-o", "model.frontend.hop_ms=-10"], "frontend.hop_ms must be > 0"),
    (run_pretrain.main, [*PRETRAIN, "-o", "model.encoder.position_scale=-1"], "encoder.position_scale must be >= 0"),
    (
        run_downstream.main,
        [*TASK, "-p", "OUT", "-o", "runner.gradient_clipping=nan"],
        "runner.gradient_clipping must be a finite number, got nan",
    ),
    (run_downstream.main, [*TASK, "-p", "OUT", "-o", "optimizer.lr=nan"], "optimizer.lr must be a finite number, got nan"),
    (run_downstream.main, [*TASK, "-p", "OUT", "-o", "optimizer.weight_decay=-1"], "optimizer.weight_decay must be >= 0"),
    (
        run_downstream.main,
        [*TASK, "-p", "OUT", "-o", "data.dev_fraction=nan"],
        "data.dev_fraction must be a finite number, got nan",
    ),
    # Duplicated keys and unreadable YAML: one line naming the key or problem, the file and the line (cases 6 and 20).
    (
        run_pretrain.main,
        [*PRETRAIN, "-c", "TMP/twice.yaml"],
        "TMP/twice.yaml line 3, column 1: not valid YAML: key 'runner' given twice (first on line 1)",
    ),
    (
        run_pretrain.main,
        [*PRETRAIN, "-c", "TMP/key_twice.yaml"],
        "TMP/key_twice.yaml line 3, column 3: not valid YAML: key 'total_steps' given twice (first on line 2)",
    ),
    (
        run_downstream.main,
        [*TASK, "-p", "OUT", "-c", "TMP/twice.yaml"],
        "TMP/twice.yaml line 3, column 1: not valid YAML: key 'runner' given twice",
    ),
    (
        run_pretrain.main,
        [*PRETRAIN, "-c", "TMP/tab.yaml"],
        "TMP/tab.yaml line 2, column 1: not valid YAML: found character '\\t'",
    ),
    (
        run_pretrain.main,
        [*PRETRAIN, "-c", "TMP/object.yaml"],
        "TMP/object.yaml line 2, column 16: not valid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object:os.getcwd'",
    ),
    (
        run_pretrain.main,
        [*PRETRAIN, "-o", "runner.total_steps={a: 1, a: 2}"],
        "override 'runner.total_steps={a: 1, a: 2}' line 1, column 8: not valid YAML: key 'a' given twice",
    ),
    (
        run_pretrain.main,
        [*PRETRAIN, "-o", "runner.total_steps=5 runner.log_step=2"],
        "in one word (quoted together?): give each its own word, -o runner.total_steps=5 runner.log_step=2",
    ),
    (run_pretrain.main, [*PRETRAIN, "-o", "corpus.subsets=train-clean-100"], "write a list in brackets, [train-clean-100]"),
    (
        run_downstream.main,
        ["-u", "aalbert_3L", "-k", "no/such.ckpt", "-d", "phone_linear", "-p", "OUT"],
        "checkpoint not found: no/such.ckpt (relative to the working directory",
    ),
    # Not an abbreviation of --tasks-dir: every option is written out.
    (run_downstream.main, ["-u", "fbank", "--task", "phone_linear", "-p", "OUT"], "unrecognized arguments: --task"),
    (run_pretrain.main, [*PRETRAIN, "--stop", "3"], "unrecognized arguments: --stop"),
    (hub._main, ["from_checkpoint", AUDIO], "from_checkpoint builds what a checkpoint describes: give it with -k CKPT"),
    (hub._main, ["aalbert_4L", AUDIO], "unknown upstream 'aalbert_4L'"),
    (hub._main, ["fbank", "TMP/missing.flac"], "audio file not found"),
    (hub._main, ["aalbert_3L", "-k", "TMP/notes.txt", AUDIO], "not a loadable checkpoint"),
    (hub._main, ["fbank", "TMP/tiny.wav"], "TMP/tiny.wav has 10 samples, shorter than one analysis window"),
    (hub._main, ["aalbert_3L", "-k", "TMP/tiny.ckpt"], "give at least one audio file"),
    (report.main, ["-u", "nosuch", "-p", "OUT"], "unknown upstream 'nosuch'"),
    (report.main, ["-u", "fbank:TMP/missing.ckpt", "-p", "OUT"], "checkpoint TMP/missing.ckpt not found"),
    (report.main, ["-u", "fbank", "-p", "OUT", "--speed-utterances", "0"], "--speed-utterances must be at least 1"),
    (layerwise.main, ["-u", "fbank", "-d", "speaker_frame", "-p", "OUT", "-o", "runner.total_stepz=1"], "no key 'total_stepz'"),
    (proportion.main, ["-u", "fbank", "fbank", "-p", "OUT"], "upstream label(s) ['fbank'] given twice"),
    (tsne.main, ["-u", "fbank", "-o", "data.root=TMP/nowhere"], "corpus root not found"),
    # -o means overrides in every command; the picture file is --output, and the old flags say so.
    (tsne.main, ["-u", "fbank", "-o", "TMP/t.png"], "'TMP/t.png' is no override: write the output file as --output"),
    (tsne.main, ["-u", "fbank", "--root", "TMP"], "--root is now -o data.root=DIR"),
    (tsne.main, ["-u", "fbank", "-o", "data.rooot=TMP"], "no key 'rooot' at data"),
    # No picture over an input: the checkpoint, the audio, the label and phone files.
    (tsne.main, ["-u", "aalbert_3L", "-k", "TMP/tiny.ckpt", "--output", "TMP/tiny.ckpt"], "--output TMP/tiny.ckpt is one of"),
    (tsne.main, ["-u", "fbank", "--level", "frame", "--output", str(REPO / "data/demo/phones.txt")], "one of this command"),
    (attention_map.main, ["-u", "aalbert_3L", "--audio", "TMP/tiny.wav", "--output", "TMP/tiny.wav"], "one of"),
    (attention_map.main, ["-u", "aalbert_3L", "-k", "TMP/tiny.ckpt", "--audio", AUDIO, "--output", "TMP/tiny.ckpt"], "one of"),
    (attention_map.main, ["-u", "aalbert_3L", "--audio", "TMP/missing.flac"], "audio file not found"),
    (attention_map.main, ["-u", "aalbert_3L", "--audio", AUDIO, "--layer", "9"], "--layer must be in [1, 3]"),
]


def _fill(args: list[str], tmp_path) -> list[str]:
    return [arg.replace("OUT", str(tmp_path / "out")).replace("TMP", str(tmp_path)) for arg in args]


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    (tmp_path / "twice.yaml").write_text("runner:\n  total_steps: 5\nrunner:\n  save_step: 5\n")
    (tmp_path / "key_twice.yaml").write_text("runner:\n  total_steps: 5\n  total_steps: 1000\n")
    (tmp_path / "tab.yaml").write_text("runner:\n\ttotal_steps: 5\n")
    (tmp_path / "object.yaml").write_text("runner:\n  total_steps: !!python/object:os.getcwd {}\n")
    write_wav(tmp_path / "tiny.wav", np.zeros(10, np.float32), "PCM_16")
    torch.manual_seed(0)
    save_upstream(Upstream(tiny_config(num_layers=3)), tmp_path / "tiny.ckpt", "aalbert_3L")
    return tmp_path


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("main, args, expected", MISTAKES, ids=[f"{m.__module__}-{i}" for i, (m, _, _) in enumerate(MISTAKES)])
def test_a_mistake_is_one_line_and_exit_status_2(main, args, expected, inputs, capsys):
    from utility.cli import run_cli

    with pytest.raises(SystemExit) as stop:
        run_cli(main, _fill(args, inputs))
    assert stop.value.code == 2
    assert_one_line_error(capsys.readouterr().err, _fill([expected], inputs)[0])
    assert not (inputs / "out").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "args, expected",
    [
        (["run_pretrain.py", "-u", "aalbert_3L", "-p", "OUT", "-o", "runner.total_steps=many"], "runner.total_steps must be int"),
        (["run_downstream.py", "-u", "fbank", "-d", "nosuch", "-p", "OUT"], "unknown task 'nosuch'"),
        (["hub.py", "aalbert_3L", "TMP/missing.flac"], "audio file not found"),
        (["-m", "analysis.report", "-u", "nosuch", "-p", "OUT"], "unknown upstream 'nosuch'"),
    ],
)
def test_the_commands_themselves_print_one_line(args, expected, tmp_path):
    done = run_command(_fill(args, tmp_path), cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done.stderr, expected)


def test_world_size_without_rank_names_both_variables(tmp_path, monkeypatch, capsys):
    from utility.cli import run_cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(SystemExit) as stop:
        run_cli(run_downstream.main, [*TASK, "-p", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "WORLD_SIZE=2 is set but RANK is not", "torchrun")


def test_debug_shows_the_traceback_and_a_bug_keeps_it(tmp_path, monkeypatch):
    from utility.cli import run_cli

    with pytest.raises(ValueError, match="unknown task"):
        run_cli(run_downstream.main, ["-u", "fbank", "-d", "nosuch", "-p", str(tmp_path / "x"), "--debug"])
    monkeypatch.setattr(hub, "build_upstream", lambda *args, **kwargs: None)  # a bug: None has no attributes
    with pytest.raises(AttributeError):
        run_cli(hub._main, ["fbank", AUDIO])


def test_out_of_memory_is_one_line_with_a_batch_size_hint(tmp_path, monkeypatch, capsys):
    from pretrain.trainer import Pretrainer
    from utility.cli import run_cli

    def too_big(self, micro_batches, keep_picture):
        return torch.empty(2**62, dtype=torch.uint8)  # a real allocation the machine cannot give

    monkeypatch.setattr(Pretrainer, "_update", too_big)
    with pytest.raises(SystemExit) as stop:
        run_cli(
            run_pretrain.main,
            [
                "-u",
                "aalbert_3L",
                "-p",
                str(tmp_path / "x"),
                "-o",
                "model.encoder.hidden_size=32",
                "-o",
                "model.encoder.num_heads=4",
                "-o",
                "corpus.dev_subsets=[]",
                "-o",
                "data.num_workers=0",
            ],
            run_pretrain.MEMORY_HINT,
        )
    assert stop.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "out of memory (", "can't allocate memory", "runner.gradient_accumulate_steps")


def test_hub_takes_options_anywhere(tmp_path):
    checkpoint = tmp_path / "tiny.ckpt"
    torch.manual_seed(0)
    save_upstream(Upstream(tiny_config(num_layers=3)), checkpoint, "aalbert_3L")
    for args in (["aalbert_3L", "-k", str(checkpoint), AUDIO], ["-k", str(checkpoint), "aalbert_3L", AUDIO]):
        done = run_command([str(REPO / "hub.py"), *args], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "aalbert_3L: 4 hidden states" in done.stdout


def test_a_complex_waveform_is_called_complex(tiny_upstream):
    with pytest.raises(TypeError, match="waveform 0 has complex dtype torch.complex64; expected real float samples"):
        tiny_upstream([torch.zeros(16000, dtype=torch.complex64)])


def test_an_unusable_folder_is_named(tmp_path, capsys):
    from utility.cli import run_cli

    blocked = tmp_path / "file"
    blocked.write_text("a file where the experiment folder should go")
    with pytest.raises(SystemExit) as stop:
        run_cli(run_pretrain.main, ["-u", "aalbert_3L", "-p", str(blocked / "run")])
    assert stop.value.code == 2
    assert_one_line_error(capsys.readouterr().err, str(blocked))
    shutil.rmtree(tmp_path)


def test_sigterm_outside_training_unwinds_like_ctrl_c_and_exits_143(tmp_path, capsys):
    """What the analysis commands and every non-training stage get: locks released, exit 143."""
    import os
    import signal

    from utility.cli import run_cli
    from utility.experiment_lock import ExperimentLock

    def main(argv):
        with ExperimentLock(tmp_path / "out"):
            (tmp_path / "out" / "partial").write_text("x")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the signal interrupts this
            raise AssertionError("SIGTERM did not stop the command")

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        run_cli(main, [])
    assert stop.value.code == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == "terminated (SIGTERM)"
    assert not (tmp_path / "out" / ".lock").exists()
    assert signal.getsignal(signal.SIGTERM) is previous  # the host's handler is back
