"""Pretraining: masking, batching, the run_pretrain entry point, exact resume, DDP, bad input.

Runs use a tiny encoder (hidden 32, 4 heads, FFN 64) on the demo corpus so they take seconds.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

import run_pretrain
from conftest import REPO, TINY, overrides
from upstream import Upstream, build_upstream, read_audio, save_upstream
from utility.checkpoint_file import read_checkpoint_file
from corpora.index import find_utterances
from corpora.root import DEMO_ROOT
from pretrain.data import BatchMaker, BatchPlan, seeded_generator
from pretrain.masking import mask_frames, masked_l1
from pretrain.model import MaskedAcousticModel, recompute_layers_in_backward
from pretrain.trainer import Pretrainer
from pretrain.settings import MaskingSettings, load_settings
from utility.checkpoint_keeper import CheckpointKeeper
from utility.process_group import init_distributed


def encoder_state(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint_file(path)["upstream"]["state_dict"]


# ---------------------------------------------------------------------------------------------
# Masking


def masking(**changes) -> MaskingSettings:
    """The shipped masking settings (config.yaml), with ``changes``."""
    return dataclasses.replace(load_settings("aalbert_3L").masking, **changes)


def _batch(lengths: list[int], dim: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct, non-zero frames (so replaced and kept frames can be told apart), zero padding."""
    inputs = torch.zeros(len(lengths), max(lengths), dim)
    for b, length in enumerate(lengths):
        inputs[b, :length] = torch.randn(length, dim) + 5.0
    return inputs, torch.tensor(lengths)


def test_spans_cover_about_the_proportion_and_never_padding():
    settings = masking()  # span 7 at R = 1
    inputs, lengths = _batch([400, 250, 120])
    masked, selected = mask_frames(inputs, lengths, [seeded_generator(1, b) for b in range(3)], settings, 1, 6)
    for b, length in enumerate(lengths.tolist()):
        row = selected[b]
        assert not row[length:].any()
        assert 0.08 <= row[:length].float().mean() <= 0.16
        edges = torch.diff(torch.cat([torch.zeros(1), row.float(), torch.zeros(1)]))
        runs = (edges == -1).nonzero().flatten() - (edges == 1).nonzero().flatten()
        assert runs.min() >= 7  # whole spans (overlapping spans make longer runs)
    assert torch.equal(masked[1, 250:], torch.zeros(150, 6))


def test_one_choice_per_utterance_in_80_10_10_proportions():
    settings = masking(span=2)
    count, length = 1500, 40
    inputs, lengths = _batch([length] * count)
    masked, selected = mask_frames(inputs, lengths, [seeded_generator(2, b) for b in range(count)], settings, 1, 6)
    modes = []
    for b in range(count):
        positions = selected[b].nonzero().flatten()
        got, original = masked[b, positions], inputs[b, positions]
        if torch.equal(got, torch.zeros_like(got)):
            modes.append("zero")
        elif torch.equal(got, original):
            modes.append("keep")
        else:
            # every selected frame is some real frame of the same utterance
            matches = (got[:, None, :] == inputs[b, None, :length, :]).all(-1).any(-1)
            assert matches.all()
            modes.append("random")
        unselected = ~selected[b]
        assert torch.equal(masked[b, unselected], inputs[b, unselected])
    share = {mode: modes.count(mode) / count for mode in ("zero", "random", "keep")}
    assert share["zero"] == pytest.approx(0.8, abs=0.04)
    assert share["random"] == pytest.approx(0.1, abs=0.03)  # random may pick the same frame: rarely all
    assert share["keep"] == pytest.approx(0.1, abs=0.03)


def test_mask_of_an_utterance_does_not_depend_on_its_batch():
    settings = masking(frequency_width=3, noise_proportion=1.0)
    inputs, lengths = _batch([90, 60])
    together, selected = mask_frames(inputs, lengths, [seeded_generator(3, 0), seeded_generator(3, 1)], settings, 3, 3)
    alone, alone_selected = mask_frames(inputs[1:, :60], lengths[1:], [seeded_generator(3, 1)], settings, 3, 3)
    assert torch.equal(together[1, :60], alone[0])
    assert torch.equal(selected[1, :20], alone_selected[0])
    assert torch.equal(together[1, 60:], torch.zeros(30, 6))  # noise never lands on padding
    # stacked frames: spans of one stacked step = 3 raw frames
    assert selected.shape == (2, 30)


def test_loss_counts_every_selected_position_and_nothing_else():
    rate, target_dim = 3, 4
    targets = torch.randn(2, 30, target_dim)
    lengths = torch.tensor([30, 21])
    prediction = torch.randn(2, 10, target_dim * rate)
    selected = torch.zeros(2, 10, dtype=torch.bool)
    selected[0, [1, 2, 3, 8]] = True
    selected[1, [0, 5, 6]] = True
    total, count = masked_l1(prediction, targets, lengths, selected, rate)
    expected = sum(
        (prediction[b, s] - targets[b, s * rate : (s + 1) * rate].reshape(-1)).abs().sum()
        for b, s in selected.nonzero().tolist()
    )
    assert count == 7 * rate * target_dim
    assert total == pytest.approx(float(expected), rel=1e-6)


def test_too_short_utterance_is_refused_by_the_masker_and_skipped_by_the_corpus(tmp_path):
    settings = masking()
    inputs, lengths = _batch([20])
    with pytest.raises(ValueError, match="too short to mask"):
        mask_frames(inputs, lengths, [seeded_generator(0)], settings, 1, 6)

    corpus = _small_corpus(tmp_path, 5)
    soundfile.write(corpus / "train-clean-100" / "9" / "9" / "9-9-0000.flac", np.zeros(400, np.float32), 16000)
    with pytest.warns(UserWarning, match="skipped 1 of 6 utterances.*too short to mask"):
        outcome = run_pretrain.main(["-u", "aalbert_3L", "-p", str(tmp_path / "exp"), *overrides(
            f"corpus.root={corpus}", "runner.total_steps=1", "corpus.dev_subsets=[]")])
    assert outcome.step == 1


def test_batches_are_length_bucketed_and_reproducible():
    lengths = list(range(100, 4100, 100))  # 40 utterances
    plan = BatchPlan(lengths, batch_size=4, bucket_batches=2, seed=5)
    epoch = plan.epoch(0)
    assert len(epoch) == 10 and sorted(i for batch in epoch for i in batch) == list(range(40))
    def spreads(batches):
        return [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]

    # One bucket holding the whole epoch: every batch is 4 neighbouring lengths.
    assert spreads(BatchPlan(lengths, 4, bucket_batches=10, seed=5).epoch(0)) == [300] * 10
    assert np.mean(spreads(epoch)) < np.mean(spreads(BatchPlan(lengths, 4, bucket_batches=1, seed=5).epoch(0)))
    assert BatchPlan(lengths, 4, 2, seed=5).batch(13) == plan.batch(13)
    assert plan.epoch(1) != epoch  # a new order every epoch


def test_activation_checkpointing_gives_the_same_gradients():
    settings = load_settings("mockingjay_3L", overrides=TINY)  # dropout 0.1: recomputation must replay it
    inputs, lengths = torch.randn(2, 60, 160), torch.tensor([60, 45])
    gradients, kept = [], []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = MaskedAcousticModel(Upstream(settings.model).encoder, settings.model.frontend.target_dim).train()
        if recompute:
            recompute_layers_in_backward(model.encoder)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            loss = model(inputs, lengths).square().sum()
        loss.backward()
        gradients.append({name: p.grad for name, p in model.named_parameters()})
        kept.append(sum(saved))
    assert kept[1] < kept[0] / 2  # the layers' activations were not kept for backward
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# The entry point


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run shared by the end-to-end tests: aalbert with 3 (shared) layers, so the
    checkpoint also loads under the name aalbert_3L."""
    folder = tmp_path_factory.mktemp("pretrain") / "run"
    outcome = run_pretrain.main(["-u", "aalbert_3L", "-p", str(folder), *overrides(
        "optimizer.lr=2e-3", "runner.total_steps=20", "runner.save_step=5", "runner.max_keep=2",
        "runner.image_step=10", "data.num_workers=1", "corpus.dev_utterances=6",
    )])
    return outcome


def test_run_lowers_held_out_loss_and_keeps_checkpoints(trained):
    steps = [step for step, _ in trained.dev_history]
    assert steps == [0, 5, 10, 15, 20]
    first, last = trained.dev_history[0][1], trained.dev_history[-1][1]
    assert last < first - 0.005, trained.dev_history
    assert trained.finished and trained.step == 20
    kept = sorted(p.name for p in trained.experiment.glob("*.ckpt"))
    assert kept == ["best.ckpt", "states-00000015.ckpt", "states-00000020.ckpt"]
    best = read_checkpoint_file(trained.experiment / "best.ckpt")
    assert best["metadata"]["dev_masked_l1"] == pytest.approx(min(loss for _, loss in trained.dev_history[1:]))
    assert any(p.name.startswith("events") for p in (trained.experiment / "log").iterdir())


def test_checkpoint_loads_through_torch_hub_with_the_training_models_states(trained):
    wavs = [read_audio(u.path) for u in find_utterances(DEMO_ROOT, ["test-clean"], progress=False)[:2]]
    with torch.inference_mode():
        expected = trained.upstream.eval()(wavs)["hidden_states"]
        for entry in ("aalbert_3L", "from_checkpoint"):
            model = torch.hub.load(str(REPO), entry, source="local", ckpt=str(trained.checkpoint))
            got = model(wavs)["hidden_states"]
            assert len(got) == 4
            for state, reference in zip(got, expected):
                torch.testing.assert_close(state, reference, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="3-layer aalbert model"):
        build_upstream("aalbert_6L", trained.checkpoint)


def test_resume_is_exact_and_a_finished_run_says_so(tmp_path, capsys):
    settings = overrides(
        "runner.total_steps=6", "runner.save_step=3", "runner.gradient_accumulate_steps=2", "optimizer.lr=1e-3",
        "model.encoder.hidden_dropout=0.1", "model.encoder.num_layers=2",
    )
    straight = run_pretrain.main(["-u", "mockingjay_3L", "-p", str(tmp_path / "straight"), *settings])
    half = run_pretrain.main(["-u", "mockingjay_3L", "-p", str(tmp_path / "split"), "--stop-at-step", "3", *settings])
    assert (half.step, half.finished) == (3, False)
    resumed = run_pretrain.main(["-e", str(tmp_path / "split")])
    assert resumed.step == 6 and resumed.train_losses == straight.train_losses[3:]
    a, b = read_checkpoint_file(straight.checkpoint), read_checkpoint_file(resumed.checkpoint)
    for key, value in a["upstream"]["state_dict"].items():
        assert torch.equal(value, b["upstream"]["state_dict"][key]), key
    for key, value in a["head"].items():
        assert torch.equal(value, b["head"][key]), key
    assert a["pretraining"]["optimizer"]["state"][0]["exp_avg_sq"].equal(b["pretraining"]["optimizer"]["state"][0]["exp_avg_sq"])

    again = run_pretrain.main(["-e", str(tmp_path / "split")])
    assert again.finished and again.step == 6
    assert "already finished at step 6" in capsys.readouterr().out


def test_two_process_ddp_matches_one_process(tmp_path):
    settings = overrides("runner.total_steps=3", "runner.save_step=3", "optimizer.lr=1e-3", "corpus.dev_subsets=[]")
    single = run_pretrain.main(["-u", "aalbert_3L", "-p", str(tmp_path / "one"), *settings])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "run_pretrain.py"), "-u", "aalbert_3L", "-p", str(tmp_path / "two"), "--device", "cpu", *settings],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = encoder_state(single.checkpoint), encoder_state(tmp_path / "two" / "states-00000003.ckpt")
    torch.manual_seed(load_settings("aalbert_3L").runner.seed)  # the initial weights of both runs
    initial = Upstream(load_settings("aalbert_3L", overrides=TINY).model).encoder.state_dict()
    assert max(float((one[k] - initial[k]).abs().max()) for k in one) > 1e-3  # training moved the weights
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, rtol=1e-4, atol=1e-6)


def test_gradient_accumulation_matches_one_big_micro_batch(tmp_path):
    settings = overrides("runner.total_steps=2", "runner.save_step=2", "optimizer.lr=1e-3", "corpus.dev_subsets=[]")
    states = []
    for steps in (1, 2):
        outcome = run_pretrain.main(["-u", "aalbert_3L", "-p", str(tmp_path / str(steps)), *settings,
                                     "-o", f"runner.gradient_accumulate_steps={steps}"])
        states.append(encoder_state(outcome.checkpoint))
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, rtol=1e-4, atol=1e-6)


def test_non_finite_gradient_skips_the_update_and_counts_it(tmp_path):
    settings = load_settings("aalbert_3L", overrides=TINY + ["corpus.dev_subsets=[]", "runner.total_steps=2"])
    trainer = Pretrainer(settings, tmp_path, init_distributed("cpu"))
    good = trainer.train_set[0]
    poisoned = dataclasses.replace(good, inputs=good.inputs.clone())
    poisoned.inputs[0, 0, 0] = float("inf")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    stats = trainer._update([poisoned], keep_picture=False)
    assert not np.isfinite(stats.grad_norm) and trainer.counters["skipped_nonfinite"] == 1
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())
    assert not trainer.update.optimizer.state  # AdamW never saw the poisoned gradient
    stats = trainer._update([good], keep_picture=False)
    assert np.isfinite(stats.grad_norm) and trainer.counters["skipped_nonfinite"] == 1
    assert trainer.update.optimizer.state


# ---------------------------------------------------------------------------------------------
# Crashes and bad input


def test_sigkill_mid_save_leaves_the_previous_checkpoint_readable(tmp_path):
    # The child saves step 1, then dies by SIGKILL while step 2 is being written: an object in
    # the payload announces that pickling has started and then waits to be killed.
    script = textwrap.dedent(
        f"""
        import sys, time, torch
        sys.path.insert(0, {str(REPO)!r})
        from utility.checkpoint_keeper import CheckpointKeeper
        from utility.process_group import init_distributed

        class Stall:
            def __reduce__(self):
                print("writing", flush=True)
                time.sleep(600)
                return (int, (0,))

        keeper = CheckpointKeeper({str(tmp_path)!r}, max_keep=3)
        keeper.save({{"weights": torch.arange(10.0), "step": 1}}, step=1, metric=1.0)
        keeper.save({{"weights": torch.zeros(1_000_000), "stall": Stall(), "step": 2}}, step=2, metric=0.5)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    keeper = CheckpointKeeper(tmp_path)
    assert keeper.latest() == keeper.path_for(1)
    for path in (keeper.latest(), keeper.best_path):
        data = read_checkpoint_file(path)
        assert data["step"] == 1 and torch.equal(data["weights"], torch.arange(10.0))
    assert [p.name for p in keeper.remove_partial_files()] and not list(tmp_path.glob(".*"))


def _small_corpus(root: Path, count: int) -> Path:
    """A copy of ``count`` demo training files (LibriSpeech layout)."""
    corpus = root / "corpus"
    for utterance in find_utterances(DEMO_ROOT, ["train-clean-100"], progress=False)[:count]:
        target = corpus / "train-clean-100" / utterance.speaker / utterance.chapter / utterance.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(utterance.path, target)
    (corpus / "train-clean-100" / "9" / "9").mkdir(parents=True, exist_ok=True)
    return corpus


def test_unreadable_files_are_skipped_by_name_and_other_rates_resampled(tmp_path):
    corpus = _small_corpus(tmp_path, 4)
    folder = corpus / "train-clean-100" / "9" / "9"
    (folder / "9-9-0001.flac").write_bytes(b"not audio at all" * 100)  # unreadable header
    source = find_utterances(DEMO_ROOT, ["train-clean-100"], progress=False)[5].path
    wav, _ = soundfile.read(source, dtype="float32")
    truncated = folder / "9-9-0002.flac"
    shutil.copy(source, truncated)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])  # header fine, data cut
    slow = folder / "9-9-0003.wav"
    soundfile.write(slow, wav[::2], 8000)
    # 5 usable files: the truncated one is found when the corpus is indexed.
    run = ["-u", "aalbert_3L", *overrides(f"corpus.root={corpus}", "runner.total_steps=2", "corpus.dev_subsets=[]",
                                          "data.batch_size=5")]

    with pytest.warns(UserWarning) as caught:
        outcome = run_pretrain.main([*run, "-p", str(tmp_path / "skip")])
    messages = " ".join(str(w.message) for w in caught)
    assert "9-9-0001.flac" in messages  # header unreadable: left out of the index
    assert "9-9-0002.flac" in messages  # truncated: skipped when indexed
    assert outcome.step == 2

    settings = load_settings("aalbert_3L", overrides=TINY + [f"corpus.root={corpus}"])
    utterance = next(u for u in find_utterances(corpus, ["train-clean-100"], skip_unreadable=True) if u.path == slow)
    batch = BatchMaker(settings).make([utterance], [seeded_generator(0)], random_crop=False)
    assert int(batch.lengths[0]) == (wav[::2].size * 2) // 160 + 1  # resampled to 16 kHz

    with pytest.raises(ValueError, match="9-9-0001.flac"):
        run_pretrain.main([*run, "-p", str(tmp_path / "stop"), "-o", "corpus.on_unreadable=stop"])
    os.remove(folder / "9-9-0001.flac")
    maker = BatchMaker(load_settings("aalbert_3L", overrides=TINY + ["corpus.on_unreadable=stop"]))
    cut = next(u for u in find_utterances(corpus, ["train-clean-100"]) if u.path == truncated)
    with pytest.raises(ValueError, match="9-9-0002.flac.*on_unreadable=skip"):
        maker.make([cut], [seeded_generator(0)], random_crop=True)


@pytest.mark.parametrize("recipe", sorted((REPO / "pretrain" / "recipes").glob("*.yaml")), ids=lambda path: path.stem)
def test_every_recipe_builds_its_network(recipe):
    """A recipe's keys are all known (load_settings refuses others) and reach the network."""
    settings = load_settings("aalbert_3L", recipe)
    model = Upstream(settings.model)
    for key, value in yaml.safe_load(recipe.read_text()).get("model", {}).get("encoder", {}).items():
        assert getattr(model.encoder.config, key) == value, key


@pytest.mark.parametrize(
    "extra, error, message",
    [
        (["-o", "corpus.root=/no/such/corpus"], FileNotFoundError, "corpus root not found: /no/such/corpus"),
        (["-o", "corpus.subsets=[train-other-500]"], FileNotFoundError, "subset 'train-other-500' not found"),
        (["-o", "runner.total_stepz=5"], KeyError, "no key 'total_stepz'"),
        (["-o", "model.encoder.hiden_size=5"], KeyError, "no key 'hiden_size'"),
        (["-o", "runner.total_steps=many"], TypeError, "runner.total_steps must be int"),
        (["-o", "data.batch_size=100"], ValueError, "fewer than data.batch_size=100"),
    ],
)
def test_bad_settings_name_the_input(tmp_path, extra, error, message):
    with pytest.raises(error, match=message):
        run_pretrain.main(["-u", "aalbert_3L", "-p", str(tmp_path / "x"), *overrides("runner.total_steps=1"), *extra])


def test_bad_corpus_and_config_files(tmp_path):
    (tmp_path / "empty" / "train-clean-100").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no .flac or .wav files"):
        run_pretrain.main(["-u", "aalbert_3L", "-p", str(tmp_path / "x"), "-o", f"corpus.root={tmp_path / 'empty'}"])
    config = tmp_path / "run.yaml"
    config.write_text("runner:\n  total_steps: 10\n  warmup: 3\n")
    with pytest.raises(ValueError, match=r"run.yaml.runner: unknown key 'warmup'"):
        run_pretrain.main(["-u", "aalbert_3L", "-p", str(tmp_path / "x"), "-c", str(config)])
    with pytest.raises(ValueError, match="plain-feature baseline"):
        run_pretrain.main(["-u", "fbank", "-p", str(tmp_path / "x")])
    with pytest.raises(ValueError, match=r"encoder.attention_dropout is a probability in \[0, 1\), got 1.0"):
        run_pretrain.main(["-u", "mockingjay_3L", "-p", str(tmp_path / "x"), "-o", "model.encoder.attention_dropout=1.0"])


def test_resume_refuses_another_model_and_non_training_checkpoints(trained, tmp_path):
    with pytest.raises(ValueError, match="checkpoint of aalbert_3L; use -u aalbert_3L"):
        run_pretrain.main(["-u", "mockingjay_3L", "-e", str(trained.experiment)])
    plain = save_upstream(build_upstream("aalbert_3L", trained.checkpoint), tmp_path / "plain.ckpt", "aalbert_3L")
    with pytest.raises(ValueError, match="without pretraining state"):
        run_pretrain.main(["-e", str(plain)])
    with pytest.raises(FileNotFoundError, match="no step checkpoints"):
        run_pretrain.main(["-e", str(tmp_path)])
    with pytest.raises(ValueError, match="already holds checkpoints; resume with -e"):
        run_pretrain.main(["-u", "aalbert_3L", "-p", str(trained.experiment)])
    with pytest.raises(ValueError, match="cannot change the model"):
        run_pretrain.main(["-e", str(trained.experiment), "-o", "model.encoder.num_layers=6"])


def test_stop_at_step_says_how_to_continue_and_a_longer_schedule_is_announced(tmp_path, capsys):
    folder = tmp_path / "run"
    settings = overrides("runner.total_steps=2", "runner.save_step=1", "corpus.dev_subsets=[]")
    half = run_pretrain.main(["-u", "aalbert_3L", "-p", str(folder), "--stop-at-step", "1", *settings])
    assert not half.finished
    assert f"stopped at step 1 of 2; continue with -e {folder}" in capsys.readouterr().out
    assert run_pretrain.main(["-e", str(folder)]).finished
    longer = run_pretrain.main(["-e", str(folder), "-o", "runner.total_steps=4"])
    assert longer.step == 4
    assert "runner.total_steps changes from 2 to 4: the learning-rate schedule is laid anew" in capsys.readouterr().out
