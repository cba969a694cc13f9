"""Corpus-level CMVN: pretraining standardises with statistics of its training corpus, which the
checkpoint carries to every later use, and which keep what per-utterance CMVN removes."""

from __future__ import annotations

import pytest
import torch

import hub
import run_pretrain
from conftest import overrides
from upstream import FrontendConfig
from upstream.frontend import frame_mask


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus_cmvn") / "run"
    settings = overrides(
        "runner.total_steps=2", "runner.save_step=2", "data.corpus_cmvn=true", "data.corpus_cmvn_utterances=12"
    )
    return run_pretrain.main(["-u", "aalbert_3L", "-p", str(folder), *settings])


def real_frames(features) -> list[torch.Tensor]:
    mask = frame_mask(features.lengths, features.inputs.shape[1])
    return [features.inputs[i, mask[i]] for i in range(len(mask))]


def test_the_checkpoint_standardises_with_corpus_statistics_and_keeps_utterance_means(corpus_run, demo_wavs):
    model = hub.from_checkpoint(str(corpus_run.checkpoint))
    frontend = model.config.frontend
    assert frontend.cmvn is False and sorted(frontend.corpus_stats) == ["input_mean", "input_std", "target_mean", "target_std"]
    assert len(frontend.corpus_stats["input_mean"]) == 160 and len(frontend.corpus_stats["target_std"]) == 201
    with torch.no_grad():
        frames = real_frames(model.frontend(demo_wavs, with_target=True))
    pooled = torch.cat(frames)
    # About zero mean and unit spread over the corpus (12 training utterances gave the statistics) ...
    assert pooled.mean(0).abs().mean() < 0.5 and 0.5 < pooled.std(0).mean() < 1.5
    # ... while each utterance keeps its own mean, which per-utterance CMVN sets to zero.
    means = torch.stack([utterance.mean(0) for utterance in frames])
    assert means.std(0).mean() > 0.05
    with torch.no_grad():
        normalised = real_frames(hub.mel().frontend(demo_wavs))
    assert torch.stack([utterance.mean(0) for utterance in normalised]).abs().max() < 1e-4


def test_a_resumed_run_keeps_its_statistics(corpus_run):
    before = hub.from_checkpoint(str(corpus_run.checkpoint)).config.frontend.corpus_stats
    again = run_pretrain.main(["-e", str(corpus_run.experiment), "-o", "runner.total_steps=4"])
    assert again.step == 4
    assert hub.from_checkpoint(str(again.checkpoint)).config.frontend.corpus_stats == before


def test_corpus_statistics_are_checked():
    stats = {"input_mean": [0.0] * 160, "input_std": [1.0] * 160, "target_mean": [0.0] * 201, "target_std": [1.0] * 201}
    assert FrontendConfig(cmvn=False, corpus_stats=stats).corpus_stats == stats
    with pytest.raises(ValueError, match="set frontend.cmvn to false"):
        FrontendConfig(cmvn=True, corpus_stats=stats)
    with pytest.raises(ValueError, match="input_std must be a list of 160 numbers"):
        FrontendConfig(cmvn=False, corpus_stats={**stats, "input_std": [1.0] * 80})
    with pytest.raises(ValueError, match="target_std must be > 0"):
        FrontendConfig(cmvn=False, corpus_stats={**stats, "target_std": [0.0] * 201})
