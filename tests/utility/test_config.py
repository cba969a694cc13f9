"""One config loader: dataclass defaults, strict merges, typed values, renamed keys; task variants."""

from __future__ import annotations

import logging
import shutil

import pytest

from downstream.discovery import TASKS_DIR, load_task
from downstream.settings import load_task_config, runner_sections
from pretrain.settings import load_settings
from utility.config import apply_overrides, rename_keys


def test_task_yaml_states_differences_and_every_key_stays_overridable():
    config = load_task_config(load_task("phone_linear"), None, ["runner.save_step=7", "data.split_seed=3"])
    runner, optimizer = runner_sections(config)
    assert runner.total_steps == 150 and runner.eval_step == 50  # from the task's YAML
    assert runner.save_step == 7 and runner.max_keep == 1 and optimizer.name == "AdamW"  # defaults, one overridden
    assert config["data"]["split_seed"] == 3 and config["data"]["format"] == "frames"  # PhoneDataConfig defaults


def test_a_variant_runs_its_base_code_with_its_own_settings(tmp_path):
    variant = load_task("phone_2hidden")
    base = load_task("phone_linear")
    assert variant.expert_class is base.expert_class and variant.build_datasets is base.build_datasets
    config = load_task_config(variant)
    assert config["expert"]["hidden_sizes"] == [768, 768] and config["runner"]["total_steps"] == 150
    tasks = tmp_path / "tasks"
    shutil.copytree(TASKS_DIR / "example", tasks / "tones", ignore=shutil.ignore_patterns("__pycache__"))
    (tasks / "broken").mkdir()
    (tasks / "broken" / "config.yaml").write_text("expert:\n  hidden_size: 4\n")
    with pytest.raises(ValueError, match=r"broken is missing dataset.py, expert.py.*extends: TASK"):
        load_task("tones", tasks)
    (tasks / "broken" / "config.yaml").write_text("extends: nowhere\n")
    with pytest.raises(ValueError, match=r"broken/config.yaml: 'extends: nowhere' names no task"):
        load_task("broken", tasks)
    (tasks / "broken" / "config.yaml").write_text("extends: tones\nexpert:\n  hidden_size: 4\n")
    assert load_task_config(load_task("broken", tasks))["expert"]["hidden_size"] == 4


def test_both_runners_speak_the_same_runner_names():
    names = {"total_steps", "gradient_accumulate_steps", "gradient_clipping", "log_step", "save_step", "max_keep"}
    pretrain_runner = load_settings("aalbert_3L", overrides=["runner.gradient_accumulate_steps=2", "runner.log_step=1"]).runner
    probe_runner, _ = runner_sections(
        load_task_config(load_task("speaker_frame"), None, ["runner.gradient_accumulate_steps=2", "runner.log_step=1"])
    )
    for runner in (pretrain_runner, probe_runner):
        assert names <= set(vars(runner)) and runner.gradient_accumulate_steps == 2 and runner.log_step == 1


def test_numbers_are_typed_once_and_bad_values_name_the_key():
    settings = load_settings("aalbert_3L", overrides=["optimizer.lr=3e-4", "runner.gradient_clipping=1"])
    assert settings.optimizer.lr == 3e-4 and isinstance(settings.runner.gradient_clipping, float)
    with pytest.raises(TypeError, match="runner.total_steps must be int, got 'many'"):
        load_settings("aalbert_3L", overrides=["runner.total_steps=many"])
    with pytest.raises(ValueError, match="optimizer.lr and upstream_lr must be > 0"):
        runner_sections(load_task_config(load_task("phone_linear"), None, ["optimizer.lr=0"]))


def test_old_names_are_moved_with_a_notice(caplog):
    table = {"runner.keep_last": "runner.max_keep", "optimizer.grad_clip": "runner.gradient_clipping"}
    with caplog.at_level(logging.WARNING, logger="config"):
        moved = rename_keys({"runner": {"keep_last": 2}, "optimizer": {"grad_clip": 3.0, "lr": 1}}, table, "old.yaml")
        overridden = apply_overrides({"runner": {"max_keep": 1}}, ["runner.keep_last=4"], table)
    assert moved == {"runner": {"max_keep": 2, "gradient_clipping": 3.0}, "optimizer": {"lr": 1}}
    assert overridden == {"runner": {"max_keep": 4}}
    assert caplog.text.count("runner.keep_last is now called runner.max_keep") == 2
    config = load_task_config(load_task("speaker_frame"), None, ["runner.keep_last=3"])
    assert config["runner"]["max_keep"] == 3 and "keep_last" not in config["runner"]
