"""Files made by the layout before pretrain/ and analysis/ (commit 4829279) keep working.

The fixtures in tests/fixtures/legacy were written by that commit's code
(tests/fixtures/legacy/make_legacy_fixtures.py): a tiny pretraining run stopped at step 2 of 4
(``step-*.ckpt``, ``logs/``, the old runner key names in its stored settings) and a probe
trained on its ``best.ckpt``.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

import hub
import run_downstream
import run_pretrain
from conftest import FIXTURES, FLOAT32_EPS, REPO, cross_cpu_tolerance
from upstream import read_audio
from utility.checkpoint_file import read_checkpoint_file
from corpora.index import find_utterances
from corpora.root import DEMO_ROOT

LEGACY = FIXTURES / "legacy"


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(LEGACY / "pretrain_reference.pt", weights_only=True)


# The longest sum on the way to a hidden state: the input projection of 3 stacked 160-dim frames.
LONGEST_SUM = 3 * 160


def test_old_pretraining_checkpoint_loads_by_name_with_the_same_hidden_states(reference):
    wav = read_audio(find_utterances(DEMO_ROOT, ["dev-clean"], progress=False)[0].path)
    checkpoint = str(LEGACY / "pretrain" / "best.ckpt")
    for model in (hub.aalbert_3L(checkpoint), hub.from_checkpoint(checkpoint)):
        with torch.inference_mode():
            states = model([wav])["hidden_states"]
        assert len(states) == len(reference["hidden_states"]) == 4
        for state, expected in zip(states, reference["hidden_states"]):
            # The reference was computed on another CPU: see cross_cpu_tolerance.
            torch.testing.assert_close(state, expected, rtol=0, atol=cross_cpu_tolerance(expected, LONGEST_SUM))

    # The tolerance still sees a wrong weight: one bias element of the shared layer off by 0.01.
    model = hub.aalbert_3L(checkpoint)
    with torch.no_grad():
        model.encoder.layer.ffn_out.bias[0] += 0.01
        last = model([wav])["hidden_states"][-1]
    expected = reference["hidden_states"][-1]
    assert (last - expected).abs().max() > 10 * cross_cpu_tolerance(expected, LONGEST_SUM)


def test_old_pretraining_folder_continues_to_the_same_weights(tmp_path, reference, caplog):
    folder = shutil.copytree(LEGACY / "pretrain", tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="config"):
        outcome = run_pretrain.main(["-e", str(folder), "--device", "cpu"])
    assert outcome.finished and outcome.step == 4
    # The stored settings used the old names; they were translated, each with a notice.
    assert "runner.save_every is now called runner.save_step" in caplog.text
    final = read_checkpoint_file(folder / "states-00000004.ckpt")["upstream"]["state_dict"]
    assert final.keys() == reference["final_encoder"].keys()
    # The uninterrupted old run's weights at step 4, computed on another CPU. An Adam update moves
    # a weight by about lr (the update is normalised by the gradient's own scale), so the
    # gradients' cross-CPU relative error (cross_cpu_tolerance's bound, 2 * 480 * eps = 1.1e-4)
    # reaches the weights as about steps * lr * 1.1e-4 = 4 * 5e-5 * 1.1e-4 = 2e-11, far below atol;
    # rtol allows the weights' own float32 rounding (eps = 1.2e-7) with a margin of 80.
    for name, tensor in final.items():
        torch.testing.assert_close(tensor, reference["final_encoder"][name], rtol=80 * FLOAT32_EPS, atol=1e-6)
    assert (folder / "step-00000002.ckpt").is_file()  # the old file counts as one of max_keep
    # Begun before checkpoints counted their wall time: the resumed run's count would leave out
    # the first session, so it records none (the study reports "not recorded").
    assert "train_seconds" not in read_checkpoint_file(folder / "states-00000004.ckpt")["pretraining"]["counters"]


def test_old_probe_folder_evaluates_to_its_stored_scores(tmp_path, monkeypatch):
    folder = shutil.copytree(LEGACY / "downstream", tmp_path / "probe")
    stored = json.loads((folder / "results.json").read_text())
    monkeypatch.chdir(REPO)  # the probe names its upstream file by a repo-relative path
    metrics = run_downstream.main(["-m", "evaluate", "-e", str(folder), "--device", "cpu"])
    for split in ("dev", "test"):
        assert metrics[split]["accuracy"] == stored[split]["accuracy"]
        assert metrics[split]["loss"] == pytest.approx(stored[split]["loss"], rel=1e-5)


def test_old_key_names_are_translated_with_a_notice(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="config"):
        settings = run_pretrain.main(
            ["-u", "aalbert_3L", "--print-config", "-o", "runner.keep_last=5", "-o", "optimizer.grad_clip=2"]
        )
    assert settings is None
    assert "runner.keep_last is now called runner.max_keep" in caplog.text
    assert "optimizer.grad_clip is now called runner.gradient_clipping" in caplog.text
