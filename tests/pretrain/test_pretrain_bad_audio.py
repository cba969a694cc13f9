"""Unusable audio in a pretraining corpus is named before the first update: skipped with one
counted warning (corpus.on_unreadable=skip) or refused (stop). Tiny encoder, demo audio."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import run_pretrain
import corpora.index
from conftest import overrides
from faults import copy_corpus, non_finite_wav, write_wav

BAD = {  # file name -> what the warning or error says about it
    "9-9-0001.wav": "1 NaN or inf samples",  # inf in the middle of speech-like noise
    "9-9-0002.wav": "1 NaN or inf samples",  # NaN
    "9-9-0003.wav": "10 samples at 16 kHz, shorter than one frame",
    "9-9-0004.wav": "empty",  # 0 samples
    "9-9-0005.wav": "2 channels, expected mono",
    "9-9-0006.flac": "unreadable",  # not audio at all
    "9-9-0007.flac": "unreadable audio data",  # a flac cut after a third of its bytes
}


@pytest.fixture
def bad_corpus(tmp_path):
    corpus = copy_corpus(tmp_path, count=6)
    folder = corpus / "train-clean-100" / "9" / "9"
    non_finite_wav(folder / "9-9-0001.wav", float("inf"))
    non_finite_wav(folder / "9-9-0002.wav", float("nan"))
    write_wav(folder / "9-9-0003.wav", np.zeros(10, np.float32), "PCM_16")
    write_wav(folder / "9-9-0004.wav", np.zeros(0, np.float32), "PCM_16")
    write_wav(folder / "9-9-0005.wav", np.zeros((16000, 2), np.float32), "PCM_16")
    (folder / "9-9-0006.flac").write_bytes(b"not audio at all" * 100)
    source = next((corpus / "train-clean-100").rglob("*.flac"))
    data = source.read_bytes()
    (folder / "9-9-0007.flac").write_bytes(data[: len(data) // 3])
    return corpus


def run(corpus, folder, *extra: str):
    settings = overrides(f"corpus.root={corpus}", "runner.total_steps=2", "corpus.dev_subsets=[]", *extra)
    return run_pretrain.main(["-u", "aalbert_3L", "-p", str(folder), *settings])


def test_each_kind_of_bad_audio_is_skipped_by_name_before_the_first_update(bad_corpus, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = run(bad_corpus, tmp_path / "skip")
    notices = [str(w.message) for w in caught if "unusable audio" in str(w.message)]
    assert len(notices) == 1 and "left out 7 unusable audio file(s)" in notices[0]
    for name, problem in BAD.items():
        assert f"{name}: {problem}" in notices[0]
    assert outcome.step == 2 and outcome.skipped_nonfinite == 0  # no update saw the inf or NaN file
    assert np.isfinite(outcome.train_losses).all()


def test_stop_names_every_bad_file_and_writes_no_checkpoint(bad_corpus, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"7 unusable audio file\(s\) in .*corpus.on_unreadable=skip") as error:
        run(bad_corpus, tmp_path / "stop", "corpus.on_unreadable=stop")
    for name in BAD:
        assert name in str(error.value)
    assert not (tmp_path / "stop").exists()  # stopped before anything was written
    # The verdicts were cached with the length index: a second start reads no file again.
    monkeypatch.setattr(corpora.index, "inspect_audio", lambda path: pytest.fail(f"{path} was read again"))
    with pytest.raises(ValueError, match="7 unusable audio file"):
        run(bad_corpus, tmp_path / "stop", "corpus.on_unreadable=stop")
