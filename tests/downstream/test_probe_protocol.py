"""The probing protocol: early stopping on dev, the final training loss, and a probe that did
not learn is said to be at chance."""

from __future__ import annotations

import json
import math
import warnings

import run_downstream

FEW = ["runner.total_steps=12", "runner.eval_step=2", "runner.log_step=2", "runner.batch_size=3", "runner.eval_batch_size=12"]


def train(expdir, *extra, task="speaker_frame"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return run_downstream.main(["-u", "fbank", "-d", task, "-p", str(expdir), "-o", *FEW, *extra])


def test_a_probe_that_cannot_learn_stops_early_and_is_flagged(tmp_path, capsys):
    # A learning rate too small to move the probe: dev never improves after the first evaluation.
    results = train(tmp_path / "stuck", "optimizer.lr=1e-12", "runner.early_stopping_patience=2")
    assert results["stopped_early"] and results["steps"] == 6 and results["best_step"] == 2
    assert results["learned"] is False and 0 < results["chance_loss"] <= round(math.log(10), 4)
    assert math.isfinite(results["final_train_loss"])
    out = capsys.readouterr().out
    assert "warning: the probe did not learn" in out
    last = out.strip().splitlines()[-1]
    assert "the probe did NOT learn (dev accuracy" in last and "for always the majority class" in last
    again = run_downstream.main(["-e", str(tmp_path / "stuck")])  # a stopped run is finished
    assert again["steps"] == 6


def test_a_probe_that_learns_says_so_and_runs_to_the_cap(tmp_path):
    results = train(tmp_path / "fine", "runner.total_steps=30", "runner.early_stopping_patience=50", task="speaker_utterance")
    assert not results["stopped_early"] and results["steps"] == 30
    assert results["learned"] is True and results["dev"]["loss"] < 0.97 * results["chance_loss"]
    written = json.loads((tmp_path / "fine" / "results.json").read_text())
    assert written["final_train_loss"] == results["final_train_loss"]


def test_learning_only_the_majority_class_is_not_learning():
    """An 84/16 task: a probe answering the majority class has 0.84 accuracy and the class
    shares' loss; it beats ln(2) but not the class balance."""
    import torch

    from downstream.base import UpstreamInfo
    from downstream.frames import FrameGrid
    from downstream.heads.frame import FrameClassificationExpert
    from downstream.runner import class_balance, class_counts, learning_check
    from upstream import build_upstream

    counts = class_counts([torch.tensor([0] * 84 + [1] * 16), torch.tensor([-100, -100])], 2)  # padding skipped
    assert counts.tolist() == [84, 16]
    balance = class_balance(counts, counts)
    shares = torch.tensor([85 / 102, 17 / 102]).double()
    assert balance["majority_class_accuracy"] == 0.84
    assert balance["chance_loss"] == round(float(-(torch.tensor([0.84, 0.16]).double() * shares.log()).sum()), 4)
    expert = FrameClassificationExpert(UpstreamInfo(4, 1, FrameGrid(build_upstream("fbank"))), {}, ["a", "b"])
    majority_only = {"accuracy": 0.84, "loss": 0.44}  # below 0.97 ln 2 = 0.67, the old bar
    assert learning_check(expert, majority_only, balance)["learned"] is False
    assert learning_check(expert, {"accuracy": 0.93, "loss": 0.20}, balance)["learned"] is True
    assert learning_check(expert, {"accuracy": 0.86, "loss": 0.44}, balance)["learned"] is False  # loss at the shares'
    # Overconfident but far above the majority class (5 standard errors over 1,000 dev items:
    # 0.84 + 5 x 0.0116 = 0.898): learned; as close as 0.86, or with unknown items: not.
    overfit = {"accuracy": 0.93, "loss": 0.90, "items": 1000.0}
    assert learning_check(expert, overfit, balance)["learned"] is True
    assert learning_check(expert, {**overfit, "accuracy": 0.86}, balance)["learned"] is False
    assert learning_check(expert, {"accuracy": 0.93, "loss": 0.90}, balance)["learned"] is False
