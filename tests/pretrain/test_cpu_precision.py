"""runner.cpu_bf16: the CPU recipe's ``auto`` runs bfloat16 only where the CPU has it natively,
``on`` is refused elsewhere with the reason, and the booleans of older configs still load."""

from __future__ import annotations

import pytest
import torch

import run_pretrain
from pretrain.model import MaskedAcousticModel
from pretrain.settings import load_settings, stored_settings
from conftest import overrides
from utility import cpu_features
from utility.cli import run_cli

RECIPE = "pretrain/recipes/cpu.yaml"


def autocast_dtypes_seen(monkeypatch: pytest.MonkeyPatch) -> list:
    """The CPU autocast dtype (None: float32) of every training forward pass from now on."""
    seen: list = []
    forward = MaskedAcousticModel.forward

    def recording(self, *args, **kwargs):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(MaskedAcousticModel, "forward", recording)
    return seen


@pytest.mark.parametrize("native", [False, True])
def test_the_cpu_recipe_runs_bf16_exactly_where_the_cpu_has_it(tmp_path, monkeypatch, native):
    monkeypatch.setattr(cpu_features, "native_bf16", lambda: native)
    seen = autocast_dtypes_seen(monkeypatch)
    folder = tmp_path / "cpu"
    outcome = run_pretrain.main(["-u", "aalbert_3L", "-p", str(folder), "-c", RECIPE, "--device", "cpu",
                                 *overrides("runner.max_minutes=0.05", "runner.save_step=1000")])
    assert outcome.finished and outcome.step >= 1
    assert seen and set(seen) == {torch.bfloat16 if native else None}
    log = (folder / "train.log").read_text()
    assert log.count("runner.cpu_bf16=auto") == 1
    assert ("bfloat16 autocast" if native else "runner.cpu_bf16=auto: float32") in log


def test_cpu_bf16_on_is_refused_with_the_reason_where_bf16_is_not_native(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cpu_features, "native_bf16", lambda: False)
    with pytest.raises(SystemExit) as stop:
        run_cli(run_pretrain.main, ["-u", "aalbert_3L", "-p", str(tmp_path / "on"), "--device", "cpu",
                                    *overrides("runner.cpu_bf16=on", "runner.total_steps=1")])
    assert stop.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: runner.cpu_bf16=on:") and "no native bfloat16" in line and "auto" in line
    assert not (tmp_path / "on").exists() or not any((tmp_path / "on").glob("*.ckpt"))


def test_booleans_of_older_configs_and_command_lines_still_mean_on_and_off():
    assert load_settings("aalbert_3L", RECIPE).runner.cpu_bf16 == "auto"
    assert load_settings("aalbert_3L", None, ["runner.cpu_bf16=true"]).runner.cpu_bf16 == "on"
    stored = load_settings("aalbert_3L").to_dict()
    stored["runner"]["cpu_bf16"] = False  # as every run before ``auto`` stored it
    assert stored_settings(stored, "old.ckpt").runner.cpu_bf16 == "off"
    with pytest.raises(ValueError, match="runner.cpu_bf16 must be one of"):
        load_settings("aalbert_3L", None, ["runner.cpu_bf16=fast"])
