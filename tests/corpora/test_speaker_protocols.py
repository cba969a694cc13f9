"""Speaker identification protocols: s3prl's CPC lists (``split_by: cpc``) and VoxCeleb1
(``format: voxceleb1``), on small fixtures made from the demo corpus."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest
import soundfile

import run_downstream
from conftest import REPO
from downstream.probe_checkpoint import read_probe_checkpoint
from corpora.speaker_splits import SpeakerDataConfig, load_speaker_splits
from corpora.index import find_utterances

DEMO = REPO / "data" / "demo"
TINY = ["runner.total_steps=2", "runner.eval_step=2", "runner.log_step=1", "runner.batch_size=4", "runner.eval_batch_size=16"]


def train(task: str, expdir: Path, *overrides: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return run_downstream.main(["-u", "fbank", "-d", task, "-p", str(expdir), "-o", *TINY, *overrides])


def s3prl_lists(split_dir: Path) -> dict[str, list[str]]:
    """s3prl 0.4.18, downstream/speaker_linear_utter_libri/dataset.py, written out: the train
    list as readlines() gives it (blank lines included), random.seed(1337), random.shuffle,
    the first int(len * 0.9) lines train, the rest dev; ids are the lines without '\\n'."""
    usage_list = open(split_dir / "train_split.txt").readlines()
    random.seed(1337)
    random.shuffle(usage_list)
    percent = int(len(usage_list) * 0.9)
    lists = {"train": usage_list[:percent], "dev": usage_list[percent:]}
    lists["test"] = open(split_dir / "test_split.txt").readlines()
    # A blank line takes part in the shuffle but names no utterance.
    return {split: [line.strip("\n") for line in lines if line.strip("\n")] for split, lines in lists.items()}


@pytest.fixture
def cpc_dir(tmp_path) -> Path:
    """CPC-style lists over the demo's train-clean-100: five utterances of every speaker for
    train / dev, the sixth for test; a blank line at the end of the train list (it changes
    the cut: 51 lines, not 50, and it lands in the train part)."""
    ids = [u.utt_id for u in find_utterances(DEMO, ["train-clean-100"], progress=False)]
    by_speaker: dict[str, list[str]] = {}
    for utt_id in ids:
        by_speaker.setdefault(utt_id.split("-")[0], []).append(utt_id)
    folder = tmp_path / "cpc"
    folder.mkdir()
    (folder / "train_split.txt").write_text("".join(f"{u}\n" for items in by_speaker.values() for u in items[:5]) + "\n")
    (folder / "test_split.txt").write_text("".join(f"{items[5]}\n" for items in by_speaker.values()))
    return folder


def test_cpc_split_lists_equal_s3prls(cpc_dir):
    splits = load_speaker_splits(SpeakerDataConfig(split_by="cpc", split_dir=str(cpc_dir)))
    expected = s3prl_lists(cpc_dir)
    assert (len(expected["train"]), len(expected["dev"]), len(expected["test"])) == (
        44,
        6,
        10,
    )  # the blank line fell in the train part
    for split in ("train", "dev", "test"):
        assert [u.utt_id for u in getattr(splits, split)] == expected[split], split
    # s3prl's classes: the speaker ids sorted as strings.
    assert splits.speakers == sorted({u.split("-")[0] for u in expected["train"] + expected["dev"]})


def test_cpc_split_trains_through_the_command_line(cpc_dir, tmp_path):
    results = train("speaker_utterance", tmp_path / "exp", "data.split_by=cpc", f"data.split_dir={cpc_dir}")
    assert results["train_utterances"] == 44
    assert 0.0 <= results["test"]["accuracy"] <= 1.0
    checkpoint = read_probe_checkpoint(tmp_path / "exp" / "best.ckpt")
    assert checkpoint["label_names"] == [f"10{i:02d}" for i in range(10)]


def test_cpc_split_errors_name_the_file_and_line(cpc_dir):
    config = SpeakerDataConfig(split_by="cpc", split_dir=str(cpc_dir))
    (cpc_dir / "test_split.txt").rename(cpc_dir / "moved.txt")
    with pytest.raises(FileNotFoundError, match=r"split list not found: .*test_split.txt"):
        load_speaker_splits(config)
    # A test speaker missing from train_split.txt.
    lines = (cpc_dir / "train_split.txt").read_text().splitlines(keepends=True)
    (cpc_dir / "train_split.txt").write_text("".join(line for line in lines if not line.startswith("1009-")))
    (cpc_dir / "moved.txt").rename(cpc_dir / "test_split.txt")
    with pytest.raises(
        ValueError, match=r"test_split.txt:10: speaker 1009 of test utterance 1009-100902-\d+ is not among the 9 speakers"
    ):
        load_speaker_splits(config)
    # An id without audio.
    (cpc_dir / "train_split.txt").write_text("".join(lines[:2]) + "9999-1-0001\n")
    with pytest.raises(FileNotFoundError, match=r"train_split.txt:3: utterance 9999-1-0001 has no audio under .*train-clean-100"):
        load_speaker_splits(config)
    with pytest.raises(ValueError, match=r"split_by: cpc needs data.split_dir"):
        SpeakerDataConfig(split_by="cpc")


@pytest.fixture
def voxceleb_root(tmp_path) -> Path:
    """VoxCeleb1 layout from demo audio: 3 speakers x 2 videos x 2 clips (1 s wav), and
    iden_split.txt: per speaker two train clips, one dev, one test."""
    root = tmp_path / "voxceleb1"
    sources = find_utterances(DEMO, ["dev-clean"], progress=False)
    lines = []
    for s in range(3):
        speaker = f"id1000{s + 1}"
        for k in range(4):
            video, clip = f"video{k // 2}", f"0000{k % 2 + 1}.wav"
            wav, rate = soundfile.read(str(sources[4 * s + k].path), frames=16000)
            path = root / "wav" / speaker / video / clip
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(str(path), wav, rate)
            lines.append(f"{(1, 1, 2, 3)[k]} {speaker}/{video}/{clip}")
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("task", ["speaker_utterance", "speaker_frame"])
def test_voxceleb1_format_trains_on_iden_split(voxceleb_root, tmp_path, task):
    results = train(task, tmp_path / task, "data.format=voxceleb1", f"data.root={voxceleb_root}")
    assert results["train_utterances"] == 6 and results["metric"] == "accuracy"
    assert read_probe_checkpoint(tmp_path / task / "best.ckpt")["label_names"] == ["id10001", "id10002", "id10003"]
    assert json.loads((tmp_path / task / "results.json").read_text())["test"]["accuracy"] >= 0.0


def test_voxceleb1_split_parts_and_errors(voxceleb_root):
    config = SpeakerDataConfig(format="voxceleb1", root=str(voxceleb_root))
    splits = load_speaker_splits(config)
    assert [u.utt_id for u in splits.dev] == [f"id1000{s}-video1-00001" for s in (1, 2, 3)]
    assert [u.speaker for u in splits.test] == ["id10001", "id10002", "id10003"]
    split_file = voxceleb_root / "iden_split.txt"
    lines = split_file.read_text().splitlines()
    split_file.write_text("\n".join(lines[:4] + ["3 id10009/video0/00001.wav"] + lines[5:]) + "\n")
    with pytest.raises(FileNotFoundError, match=r"iden_split.txt:5: utterance id10009/video0/00001.wav has no audio under .*wav"):
        load_speaker_splits(config)
    # Dev and test clips of a speaker without training clips: the first is named.
    split_file.write_text("\n".join(line for line in lines if not line.startswith("1 id10003")) + "\n")
    with pytest.raises(
        ValueError, match=r"iden_split.txt:9: speaker id10003 of dev utterance id10003-video1-00001 is not among the 2 speakers"
    ):
        load_speaker_splits(config)
    split_file.write_text("4 id10001/video0/00001.wav\n")
    with pytest.raises(ValueError, match=r"iden_split.txt:1: expected '<1\|2\|3> <speaker>/<video>/<n>.wav'"):
        load_speaker_splits(config)
    with pytest.raises(ValueError, match=r"split_by: cpc is for LibriSpeech-layout corpora"):
        SpeakerDataConfig(format="voxceleb1", split_by="cpc", split_dir="x")
