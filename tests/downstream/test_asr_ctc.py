"""``asr_ctc``: character CTC on LibriSpeech-layout transcripts, WER and CER."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import run_downstream
from downstream import runner as runner_module
from conftest import REPO
from downstream.asr_ctc.dataset import DataConfig, build_datasets
from downstream.asr_ctc.expert import DownstreamExpert
from downstream.base import Batch, UpstreamInfo
from downstream.frames import FrameGrid
from upstream import build_upstream
from utility.process_defaults import apply_cli_process_defaults

DEMO = REPO / "data" / "demo"
NAMES = ["|", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ'"]


def test_asr_trains_evaluates_and_transcribes(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    apply_cli_process_defaults()  # as run_cli does for the command (conftest sets everything back)
    expdir = tmp_path / "exp"
    tiny = ["runner.total_steps=3", "runner.eval_step=3", "runner.log_step=1", "runner.batch_size=4", "runner.eval_batch_size=24"]
    results = run_downstream.main(["-u", "fbank", "-d", "asr_ctc", "-p", str(expdir), "-o", *tiny])  # the shipped config
    written = json.loads((expdir / "results.json").read_text())
    # The demo config picks the checkpoint by CER (WER stays near 1.0 there), and the log shows both.
    assert written["metric"] == "cer" and written["higher_is_better"] is False
    dev_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("step 3: dev cer"))
    assert ", wer " in dev_line and ", loss " in dev_line
    for split in ("dev", "test"):
        assert set(written[split]) == {"wer", "cer", "loss"} and math.isfinite(written[split]["loss"])
        assert 0.0 <= written[split]["cer"] <= 5.0 and written[split]["wer"] >= 0.0
    assert results["train_utterances"] == 60
    # A stored run gets its task's one thread too (the task is named inside the checkpoint).
    torch.set_num_threads(2)
    evaluated = run_downstream.main(["-m", "evaluate", "-e", str(expdir), "-t", "test"])
    assert evaluated["test"]["cer"] == written["test"]["cer"] and torch.get_num_threads() == 1
    torch.set_num_threads(2)
    assert run_downstream.main(["-e", str(expdir)])["test"] == written["test"] and torch.get_num_threads() == 1
    torch.set_num_threads(2)
    audio = sorted((DEMO / "test-clean").rglob("*.flac"))[:2]
    words = run_downstream.main(["-m", "inference", "-e", str(expdir), "-i", *map(str, audio)])
    assert len(words) == 2 and all(set("".join(w)) <= set(NAMES) - {"|"} for w in words)
    assert torch.get_num_threads() == 1


def test_wer_and_cer_count_word_and_character_edits():
    grid = FrameGrid(build_upstream("fbank"))
    expert = DownstreamExpert(UpstreamInfo(4, 1, grid), {"rnn_hidden": 4}, NAMES)
    index = {c: i for i, c in enumerate(NAMES)}

    def frames(text: str) -> torch.Tensor:
        """Log-probabilities whose best path spells ``text`` (a blank after every character)."""
        outputs = [o for c in text for o in (index[c] + 1, 0)]
        return torch.nn.functional.one_hot(torch.tensor(outputs), len(NAMES) + 1).float().log()

    hypotheses = [frames("THE|CAT"), frames("A|DOG|RAN")]
    lengths = torch.tensor([h.shape[0] for h in hypotheses])
    expert.log_probs = lambda features, lengths: torch.nn.utils.rnn.pad_sequence(hypotheses, batch_first=True)
    targets = [torch.tensor([index[c] for c in text]) for text in ("THE|BAT", "A|DOG")]
    output = expert(torch.zeros(2, int(lengths.max()), 4), lengths, Batch(["a", "b"], [], targets))
    # THE CAT vs THE BAT: 1 of 2 words, 1 of 7 characters; A DOG RAN vs A DOG: 1 of 2, 4 of 5.
    assert output.stats["word_edits"] == 2 and output.stats["words"] == 4
    assert output.stats["char_edits"] == 5 and output.stats["chars"] == 12
    metrics = expert.summarize(output.stats)
    assert metrics["wer"] == 0.5 and metrics["cer"] == pytest.approx(5 / 12)
    assert expert.predict(torch.zeros(2, int(lengths.max()), 4), lengths) == [["THE", "CAT"], ["A", "DOG", "RAN"]]
    # The checkpoint-picking metric: WER (SUPERB's) unless expert.select_by says cer.
    assert expert.metric == "wer" and DownstreamExpert(UpstreamInfo(4, 1, grid), {"select_by": "cer"}, NAMES).metric == "cer"
    with pytest.raises(ValueError, match=r"expert.select_by must be one of \('wer', 'cer'\), got 'per'"):
        DownstreamExpert(UpstreamInfo(4, 1, grid), {"select_by": "per"}, NAMES)


@pytest.fixture
def corpus(tmp_path) -> Path:
    """dev-clean of the demo with linked audio and its own transcripts, as all three subsets."""
    root = tmp_path / "corpus"
    for audio in (DEMO / "dev-clean").rglob("*.flac"):
        target = root / "dev-clean" / audio.relative_to(DEMO / "dev-clean")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(audio)
    for transcript in (DEMO / "dev-clean").rglob("*.trans.txt"):
        (root / "dev-clean" / transcript.relative_to(DEMO / "dev-clean")).write_text(transcript.read_text())
    return root


def build(root: Path):
    config = DataConfig(root=str(root), train_subset="dev-clean", dev_subset="dev-clean", test_subset="dev-clean")
    return build_datasets(config, FrameGrid(build_upstream("fbank")))


def test_transcripts_become_characters_with_word_boundaries(corpus):
    data = build(corpus)
    assert data.label_names == NAMES and len(data.train) == 24
    first = (corpus / "dev-clean/1040/104001/1040-104001.trans.txt").read_text().splitlines()[0].split(maxsplit=1)
    assert data.train.utt_ids[0] == first[0]
    assert "".join(NAMES[i] for i in data.train.targets[0].tolist()) == first[1].replace(" ", "|")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda lines: [lines[0].split()[0]] + lines[1:], r"1040-104001.trans.txt:1: the transcript of 1040-104001-\d+ is empty"),
        (lambda lines: lines + ["1040-104001-9999 A WORD"], r"1040-104001.trans.txt:4: 1040-104001-9999 has no audio file under"),
        (lambda lines: lines[1:], r"1040-104001-\d+.flac has no line in any \*.trans.txt under"),
        (
            lambda lines: [lines[0] + " NAÏVE"] + lines[1:],
            r"1040-104001.trans.txt:1: characters \['Ï'\] are not in data.characters",
        ),
    ],
)
def test_bad_transcripts_name_the_file_and_line(corpus, edit, message):
    path = corpus / "dev-clean/1040/104001/1040-104001.trans.txt"
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        build(corpus)


class ProbeBuilt(Exception):
    """Stops a run once its probe is built: the thread count is chosen by then."""


@pytest.mark.parametrize(
    "tasks, user_threads, expected",
    [(["asr_ctc"], None, [1]), (["phone_ctc"], None, [1]), (["speaker_frame"], None, [2]), (["asr_ctc"], "2", [2]),
     (["asr_ctc", "speaker_frame"], None, [1, 2])],  # one process, several tasks (the analysis commands)
)
def test_the_commands_give_the_recurrent_heads_one_thread_unless_the_user_chose(tasks, user_threads, expected, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    if user_threads is not None:
        monkeypatch.setenv("OMP_NUM_THREADS", user_threads)
    build, seen = runner_module.build_probe, []

    def spy(*args, **kwargs):
        build(*args, **kwargs)
        seen.append(torch.get_num_threads())
        raise ProbeBuilt

    monkeypatch.setattr(runner_module, "build_probe", spy)
    torch.set_num_threads(2)  # conftest's process_settings_restored sets the count back
    apply_cli_process_defaults()  # as run_cli does for the command
    for task in tasks:
        with pytest.raises(ProbeBuilt):
            run_downstream.main(["-u", "fbank", "-d", task, "--device", "cpu"])
    assert seen == expected
