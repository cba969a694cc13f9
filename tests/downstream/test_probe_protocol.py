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
    assert results["learned"] is False and results["chance_loss"] == round(math.log(10), 4)
    assert math.isfinite(results["final_train_loss"])
    assert "warning: the probe did not learn" in capsys.readouterr().out
    again = run_downstream.main(["-e", str(tmp_path / "stuck")])  # a stopped run is finished
    assert again["steps"] == 6


def test_a_probe_that_learns_says_so_and_runs_to_the_cap(tmp_path):
    results = train(tmp_path / "fine", "runner.total_steps=30", "runner.early_stopping_patience=50", task="speaker_utterance")
    assert not results["stopped_early"] and results["steps"] == 30
    assert results["learned"] is True and results["dev"]["loss"] < 0.97 * results["chance_loss"]
    written = json.loads((tmp_path / "fine" / "results.json").read_text())
    assert written["final_train_loss"] == results["final_train_loss"]
