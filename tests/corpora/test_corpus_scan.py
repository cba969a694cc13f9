"""The corpus scan (corpora.index): speaker and chapter folders that are symbolic links, one
utterance stored in two formats."""

from __future__ import annotations

import shutil

import pytest
import soundfile

from conftest import REPO
from corpora.index import find_utterances

DEMO = REPO / "data" / "demo" / "train-clean-100"
SPEAKERS = sorted(p.name for p in DEMO.iterdir() if p.is_dir())[:3]


def corpus_of(root, speakers=SPEAKERS):
    subset = root / "corpus" / "train-clean-100"
    for speaker in speakers:
        shutil.copytree(DEMO / speaker, subset / speaker)
    return root / "corpus"


def test_symlinked_speaker_and_chapter_folders_are_indexed_and_a_loop_is_walked_once(tmp_path):
    corpus = corpus_of(tmp_path, SPEAKERS[:1])
    elsewhere = tmp_path / "other_disk"
    shutil.copytree(DEMO / SPEAKERS[1], elsewhere / SPEAKERS[1])
    (corpus / "train-clean-100" / SPEAKERS[1]).symlink_to(elsewhere / SPEAKERS[1])  # a speaker on another disk
    chapter = next((DEMO / SPEAKERS[2]).iterdir())
    shutil.copytree(chapter, elsewhere / "chapter")
    (corpus / "train-clean-100" / SPEAKERS[2]).mkdir()
    (corpus / "train-clean-100" / SPEAKERS[2] / chapter.name).symlink_to(elsewhere / "chapter")  # a chapter
    (corpus / "train-clean-100" / SPEAKERS[0] / "loop").symlink_to(corpus / "train-clean-100" / SPEAKERS[0])
    utterances = find_utterances(corpus, ["train-clean-100"], progress=False)
    expected = sorted(p.stem for s in SPEAKERS[:2] for p in (DEMO / s).rglob("*.flac")) + sorted(
        p.stem for p in chapter.glob("*.flac")
    )
    assert sorted(u.utt_id for u in utterances) == sorted(expected)
    assert {u.speaker for u in utterances} == set(SPEAKERS)


def test_an_utterance_stored_as_flac_and_wav_is_indexed_once_as_flac_with_a_warning(tmp_path):
    corpus = corpus_of(tmp_path)
    flacs = sorted((corpus / "train-clean-100").rglob("*.flac"))
    for flac in flacs[:2]:
        samples, rate = soundfile.read(flac)
        soundfile.write(flac.with_suffix(".wav"), samples, rate)
    expected = rf"2 utterance\(s\) stored in two formats: indexing .flac before .wav, leaving out .*{flacs[0].stem}.wav"
    with pytest.warns(UserWarning, match=expected):
        utterances = find_utterances(corpus, ["train-clean-100"], progress=False)
    ids = [u.utt_id for u in utterances]
    assert len(ids) == len(set(ids)) == len(flacs)
    assert all(u.path.suffix == ".flac" for u in utterances)
