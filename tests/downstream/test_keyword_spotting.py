"""``keyword_spotting``: Speech Commands v0.01 with SUPERB's protocol, on a tiny Speech
Commands-layout folder cut from demo audio."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

import run_downstream
from conftest import REPO
from downstream.frames import FrameGrid
from downstream.keyword_spotting.dataset import CLASSES, DataConfig, build_datasets
from upstream import build_upstream
from corpora.index import find_utterances

DEMO = REPO / "data" / "demo"
WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "bed", "cat"]  # bed, cat: _unknown_


@pytest.fixture(scope="module")
def commands(tmp_path_factory) -> Path:
    """Three one-second clips per word folder (two more words stand for _unknown_): the first
    of each folder in validation_list.txt, the second in testing_list.txt; two noise files of
    10.5 s (slices 0-9: 8 train, 1 dev, 1 test each)."""
    root = tmp_path_factory.mktemp("speech_commands")
    sources = find_utterances(DEMO, ["train-clean-100"], progress=False)
    lists = {"validation_list.txt": [], "testing_list.txt": []}
    for w, word in enumerate(WORDS):
        (root / word).mkdir()
        for n in range(3):
            wav, rate = soundfile.read(str(sources[(3 * w + n) % len(sources)].path), start=8000, frames=16000)
            name = f"{w:02d}c0ffee_nohash_{n}.wav"
            soundfile.write(str(root / word / name), wav, rate)
            if n < 2:
                lists[("validation_list.txt", "testing_list.txt")[n]].append(f"{word}/{name}")
    for name, lines in lists.items():
        (root / name).write_text("\n".join(lines) + "\n")
    (root / "_background_noise_").mkdir()
    rng = np.random.default_rng(0)
    for name in ("white_noise", "pink_noise"):
        soundfile.write(str(root / "_background_noise_" / f"{name}.wav"), rng.normal(0, 0.1, 168000).astype(np.float32), 16000)
    return root


def tiny_config(path: Path, **data) -> Path:
    """The shipped config.yaml with a few small batches and ``data`` set."""
    config = yaml.safe_load((REPO / "downstream" / "keyword_spotting" / "config.yaml").read_text())
    config["runner"].update(total_steps=3, eval_step=3, log_step=1, batch_size=8, eval_batch_size=16)
    config["data"] = {**config["data"], **data}
    path.write_text(yaml.safe_dump(config))
    return path


def test_splits_classes_and_silence_slices(commands):
    data = build_datasets(DataConfig(root=str(commands)), FrameGrid(build_upstream("fbank")))
    assert data.label_names == list(CLASSES) and CLASSES[10:] == ("_unknown_", "_silence_")
    train_ids = data.train.utt_ids
    assert len(train_ids) == 12 + 16 and "yes/00c0ffee_nohash_2.wav" in train_ids
    assert [u for u in data.dev.utt_ids if u.startswith("_background")] == [
        "_background_noise_/pink_noise#8", "_background_noise_/white_noise#8"]
    assert "_background_noise_/white_noise#9" in data.test.utt_ids and len(data.test) == 12 + 2
    labels = {u: CLASSES[int(t)] for u, t in zip(data.dev.utt_ids, data.dev.targets)}
    assert labels["bed/10c0ffee_nohash_0.wav"] == "_unknown_" and labels["go/09c0ffee_nohash_0.wav"] == "go"
    assert len(data.dev.load_wav(data.dev.sources[-1])) == 16000
    # Balanced training: 10 words x 1 clip, 2 unknown clips, 16 silence slices -> 16 each.
    counts = Counter(CLASSES[int(data.train[i].target)] for i in range(len(data.train)))
    assert set(counts.values()) == {16} and len(counts) == 12


def test_keyword_spotting_trains_evaluates_and_labels_a_clip(commands, tmp_path):
    expdir = tmp_path / "exp"
    results = run_downstream.main(
        [
            "-u",
            "fbank",
            "-d",
            "keyword_spotting",
            "-c",
            str(tiny_config(tmp_path / "c.yaml", root=str(commands))),
            "-p",
            str(expdir),
        ]
    )
    written = json.loads((expdir / "results.json").read_text())
    assert written["metric"] == "accuracy" and 0.0 <= written["test"]["accuracy"] <= 1.0
    assert results["train_utterances"] == 28  # clips and slices, each counted once
    evaluated = run_downstream.main(["-m", "evaluate", "-e", str(expdir), "-t", "dev"])
    assert evaluated["dev"]["accuracy"] == written["dev"]["accuracy"]
    label = run_downstream.main(["-m", "inference", "-e", str(expdir), "-i", str(commands / "up" / "02c0ffee_nohash_2.wav")])
    assert len(label) == 1 and label[0][0] in CLASSES


def test_a_separate_test_folder_is_the_test_set(commands, tmp_path):
    test_root = tmp_path / "test_set"
    for folder, source in (
        ("yes", "yes/00c0ffee_nohash_1.wav"),
        ("_silence_", "no/01c0ffee_nohash_1.wav"),
        ("_unknown_", "cat/11c0ffee_nohash_1.wav"),
    ):
        (test_root / folder).mkdir(parents=True)
        (test_root / folder / "a.wav").symlink_to(commands / source)
    data = build_datasets(DataConfig(root=str(commands), test_root=str(test_root)), FrameGrid(build_upstream("fbank")))
    assert sorted(zip(data.test.utt_ids, (CLASSES[int(t)] for t in data.test.targets))) == [
        ("_silence_/a.wav", "_silence_"),
        ("_unknown_/a.wav", "_unknown_"),
        ("yes/a.wav", "yes"),
    ]


def test_bad_speech_commands_input_is_named(commands, tmp_path):
    grid = FrameGrid(build_upstream("fbank"))
    with pytest.raises(ValueError, match=r"data.root must name the Speech Commands v0.01 folder"):
        build_datasets(DataConfig(), grid)
    root = tmp_path / "copy"
    root.mkdir()
    for entry in commands.iterdir():
        (root / entry.name).symlink_to(entry)
    (root / "validation_list.txt").unlink()
    (root / "validation_list.txt").write_text("yes/00c0ffee_nohash_0.wav\nyes/missing.wav\n")
    with pytest.raises(FileNotFoundError, match=r"validation_list.txt:2: yes/missing.wav does not exist under"):
        build_datasets(DataConfig(root=str(root)), grid)
    (root / "validation_list.txt").write_text("yes/00c0ffee_nohash_0.wav\n")
    (root / "testing_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"testing_list.txt not found"):
        build_datasets(DataConfig(root=str(root)), grid)
