"""What pretraining must beat (trivial predictors at the same held-out masks) and the
wall-clock budget that lays the schedule out."""

from __future__ import annotations

import yaml
import torch

import run_pretrain
from pretrain.baselines import copy_nearest, interpolate, predictions, trivial_losses, visible_frames
from pretrain.data import MaskedBatch
from utility.checkpoint_file import read_checkpoint_file

TINY = [
    "model.encoder.hidden_size=32", "model.encoder.num_heads=4", "model.encoder.intermediate_size=64",
    "data.batch_size=4", "data.num_workers=0", "corpus.dev_utterances=4", "runner.log_step=1", "runner.image_step=0",
]


def ramp_batch() -> MaskedBatch:
    """Two utterances whose targets rise linearly in time; R = 3, stacked positions 2-3 masked."""
    frames, dim = 18, 2
    targets = torch.arange(frames, dtype=torch.float32)[None, :, None].repeat(2, 1, dim)
    targets[1] *= -1
    selected = torch.zeros(2, 6, dtype=torch.bool)
    selected[:, 2:4] = True
    selected[1, 5] = True  # the last real stacked frame of the shorter item: only a left neighbour
    lengths = torch.tensor([18, 18])
    return MaskedBatch(targets.clone(), targets.clone(), lengths, targets, selected, ["a", "b"], [])


def test_interpolation_recovers_a_ramp_and_the_others_are_what_they_say():
    batch = ramp_batch()
    visible = visible_frames(batch, 3)
    assert visible[0].tolist() == [True] * 6 + [False] * 6 + [True] * 6
    filled = interpolate(batch.targets, visible)
    torch.testing.assert_close(filled[0], batch.targets[0])  # linear in time: interpolation is exact
    assert torch.equal(filled[1, 15:], batch.targets[1, 14:15].expand(3, 2))  # edge: the one neighbour
    out = predictions(batch, 3)
    assert out["zeros"].shape == (2, 6, 6) and not out["zeros"].any()
    visible_mean = batch.targets[0][visible[0]].mean(0)
    assert torch.allclose(out["utterance_mean"][0, 0, :2], visible_mean)
    losses = trivial_losses([batch], 3)
    assert losses["interpolation"] < losses["copy"] < losses["utterance_mean"] < losses["zeros"]


def test_copy_takes_the_nearest_visible_frame():
    targets = torch.arange(8, dtype=torch.float32)[None, :, None]  # (1, 8, 1): frame t holds t
    visible = torch.tensor([[True, False, False, False, True, False, False, False]])
    copied = copy_nearest(targets, visible)[0, :, 0].tolist()
    # frame 1 is nearer frame 0, 3 nearer 4, 2 halfway (the earlier one), 5-7 after the last visible
    assert copied == [0, 0, 0, 4, 4, 4, 4, 4]


def test_the_log_compares_the_model_with_trivial_predictors(tmp_path):
    outcome = run_pretrain.main(["-u", "aalbert_3L", "-p", str(tmp_path / "run"), *[a for o in TINY for a in ("-o", o)],
                                 "-o", "runner.total_steps=2", "-o", "runner.save_step=2"])
    assert set(outcome.dev_baselines) == {"zeros", "utterance_mean", "copy", "interpolation"}
    assert all(0 < value < 5 for value in outcome.dev_baselines.values())
    log = (tmp_path / "run" / "train.log").read_text()
    assert "held-out masked L1 of trivial predictors: zeros" in log and "best trivial predictor: interpolation" in log
    stored = read_checkpoint_file(tmp_path / "run" / "best.ckpt")["metadata"]["dev_trivial_masked_l1"]
    assert stored == outcome.dev_baselines


def test_max_minutes_sets_the_total_from_the_measured_step_time(tmp_path):
    folder = tmp_path / "budget"
    outcome = run_pretrain.main(["-u", "aalbert_3L", "-p", str(folder), *[a for o in TINY for a in ("-o", o)],
                                 "-o", "runner.max_minutes=0.05", "-o", "runner.save_step=1000"])
    written = yaml.safe_load((folder / "config.yaml").read_text())["runner"]
    assert written["max_minutes"] == 0.05 and written["total_steps"] == outcome.step >= 1 and outcome.finished
    state = read_checkpoint_file(next(folder.glob("states-*.ckpt")))["pretraining"]
    assert state["settings"]["runner"]["total_steps"] == outcome.step  # a resume keeps this schedule
    assert state["scheduler"]["last_epoch"] == outcome.step  # ... which ended at its last step
