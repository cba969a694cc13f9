"""Every example a command's -h shows parses as printed: the command lines of -h cannot drift
from the options (argparse-level: the example is parsed, not run)."""

from __future__ import annotations

import argparse
import shlex

import pytest

import run_downstream
import run_pretrain
from analysis import attention_map, layerwise, proportion, report, study, tsne
from corpora import alignments
from utility.cli import ArgumentParser

# How each command is started in an example -> its main(argv).
COMMANDS = {
    "run_pretrain.py": run_pretrain.main,
    "run_downstream.py": run_downstream.main,
    "analysis.report": report.main,
    "analysis.layerwise": layerwise.main,
    "analysis.proportion": proportion.main,
    "analysis.study": study.main,
    "analysis.tsne": tsne.main,
    "analysis.attention_map": attention_map.main,
    "corpora.alignments": alignments.main,
}
STARTS = ("python ", "torchrun ")


class Parsed(Exception):
    """Raised instead of running the command once its arguments parsed."""


def help_text(main, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(["-h"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def examples(text: str) -> list[str]:
    """The command lines of a help text: lines starting with python/torchrun, with their
    backslash continuations, without trailing comments."""
    found, current = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if current is None and not stripped.startswith(STARTS):
            continue
        current = stripped if current is None else f"{current} {stripped}"
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        found.append(current)
        current = None
    return [shlex.split(example, comments=True) for example in found]


def command_and_args(words: list[str]) -> tuple[str, list[str]]:
    """("run_pretrain.py" or "analysis.tsne", the arguments after it)."""
    for index, word in enumerate(words):
        if word == "-m":
            return words[index + 1], words[index + 2 :]
        if word.endswith(".py"):
            return word, words[index + 1 :]
    raise AssertionError(f"no command in {words}")


@pytest.fixture
def parse_only(monkeypatch):
    """parse_args parses, then stops the command before it does anything."""
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(real(self, args, namespace))

    monkeypatch.setattr(ArgumentParser, "parse_args", parse_then_stop)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_example_of_a_commands_help_parses(name, capsys, parse_only):
    shown = examples(help_text(COMMANDS[name], capsys))
    assert shown, f"{name} -h shows no example"
    for words in shown:
        command, args = command_and_args(words)
        assert command in COMMANDS, f"{name} -h shows an example of an unknown command: {words}"
        with pytest.raises(Parsed):
            COMMANDS[command](args)
        assert "error:" not in capsys.readouterr().err, words


def test_an_example_with_a_stale_option_is_caught(capsys, parse_only):
    with pytest.raises(SystemExit) as stop:
        layerwise.main(["-u", "fbank", "-o", "result/layerwise"])  # the old -h example: -p is the output folder
    assert stop.value.code == 2 and "-p/--outdir" in capsys.readouterr().err


def test_the_readmes_first_hour_commands_parse(parse_only, capsys):
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    block = readme.split("### First hour", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    shown = examples(block)
    assert len(shown) == 5, shown
    for words in shown:
        command, args = command_and_args(words)
        with pytest.raises(Parsed):
            COMMANDS[command](args)
        assert "error:" not in capsys.readouterr().err, words
