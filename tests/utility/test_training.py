"""Shared training utilities: RNG snapshots, schedule, checkpoint keeper, devices."""

import random

import numpy as np
import pytest
import torch

from utility.checkpoint_file import read_checkpoint_file, save_atomic
from utility.checkpoint_keeper import CheckpointKeeper
from utility.precision import mixed_precision
from utility.process_group import init_distributed, resolve_device
from utility.randomness import capture_rng_state, restore_rng_state, seed_everything
from utility.schedule import linear_warmup_decay


def _draw() -> tuple:
    return (random.random(), random.gauss(0, 1), float(np.random.rand()), float(np.random.randn()), torch.rand(3))


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    seed_everything(3)
    _draw()  # leaves cached gaussians in both python and numpy
    save_atomic({"rng": capture_rng_state()}, tmp_path / "rng.ckpt")
    expected = _draw()
    seed_everything(99)
    restore_rng_state(read_checkpoint_file(tmp_path / "rng.ckpt")["rng"])
    got = _draw()
    assert got[:4] == expected[:4]
    assert torch.equal(got[4], expected[4])


def test_schedule_warms_up_then_decays_to_zero():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = linear_warmup_decay(optimizer, warmup_steps=4, total_steps=12)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4:] == pytest.approx([(12 - s) / 8 for s in range(4, 12)])
    assert optimizer.param_groups[0]["lr"] == 0.0
    with pytest.raises(ValueError, match="warmup_steps"):
        linear_warmup_decay(optimizer, warmup_steps=13, total_steps=12)


def test_keeper_keeps_last_k_and_the_best(tmp_path):
    keeper = CheckpointKeeper(tmp_path, max_keep=2)
    metrics = {10: 5.0, 20: 3.0, 30: 4.0, 40: 3.5}
    for step, metric in metrics.items():
        keeper.save({"step": step}, step, metric)
    assert [step for step, _ in keeper.step_checkpoints()] == [30, 40]
    assert keeper.latest() == keeper.path_for(40)
    best = read_checkpoint_file(keeper.best_path)
    assert best["step"] == 20
    assert best["checkpoint_keeper"] == {"best_metric": 3.0, "best_step": 20}

    resumed = CheckpointKeeper(tmp_path, max_keep=2)
    resumed.load_state_dict(read_checkpoint_file(keeper.latest())["checkpoint_keeper"])
    resumed.save({"step": 50}, 50, 3.2)  # not better than 3.0: best.ckpt stays
    assert read_checkpoint_file(resumed.best_path)["step"] == 20


def test_single_process_context_and_cpu_precision(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = init_distributed("cpu")
    assert (context.rank, context.world_size, context.is_main, context.is_distributed) == (0, 1, True, False)
    context.barrier()  # a no-op without a process group
    precision = mixed_precision(context.device)
    assert precision.dtype is None and not precision.scaler.is_enabled()


def test_bad_device_names_the_fix():
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cpu"):
            resolve_device("cuda")
