"""A task's run settings: ``config.yaml`` with four sections, overrides, typed runner sections.

``runner`` and ``optimizer`` are read here (typed below); ``data`` goes to the task's
``build_datasets`` and ``expert`` to its ``DownstreamExpert``, each typed by the task.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from upstream.config import dataclass_from_dict
from utility.run_config import apply_overrides, load_yaml

from .subset import check_proportion

SECTIONS = ("runner", "optimizer", "data", "expert")
OPTIMIZERS = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW, "SGD": torch.optim.SGD}
SCHEDULES = ("constant", "linear")


def as_float(name: str, value: Any) -> float:
    """A number, also from strings like '3e-3' (YAML 1.1 reads those as text, not floats)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a number, got {value!r}") from error


@dataclass
class RunnerConfig:
    """Steps count optimizer updates; each update sees ``batch_size`` x
    ``gradient_accumulate_steps`` utterances (per process under torchrun)."""

    total_steps: int = 1000
    batch_size: int = 8
    eval_batch_size: int = 8
    gradient_accumulate_steps: int = 1
    gradient_clipping: float = 1.0
    log_step: int = 50
    eval_step: int = 200
    keep_last: int = 1  # step checkpoints kept besides best.ckpt
    train_proportion: float = 1.0  # seeded share of the training utterances, in (0, 1]
    num_workers: int = 0  # DataLoader processes reading audio

    def __post_init__(self) -> None:
        for name in ("total_steps", "batch_size", "eval_batch_size", "gradient_accumulate_steps", "log_step", "eval_step", "keep_last"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"runner.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        self.gradient_clipping = as_float("runner.gradient_clipping", self.gradient_clipping)
        if self.gradient_clipping <= 0:
            raise ValueError(f"runner.gradient_clipping must be > 0, got {self.gradient_clipping}")
        if self.num_workers < 0:
            raise ValueError(f"runner.num_workers must be >= 0, got {self.num_workers}")
        self.train_proportion = check_proportion(as_float("runner.train_proportion", self.train_proportion))


@dataclass
class OptimizerConfig:
    """``schedule: linear`` warms up over ``warmup_proportion`` of the steps, then decays to 0;
    ``constant`` keeps ``lr``. ``upstream_lr`` (fine-tuning only; None: ``lr``)."""

    name: str = "AdamW"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_proportion: float = 0.0
    upstream_lr: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay", "warmup_proportion"):
            setattr(self, name, as_float(f"optimizer.{name}", getattr(self, name)))
        if self.upstream_lr is not None:
            self.upstream_lr = as_float("optimizer.upstream_lr", self.upstream_lr)
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer.name must be one of {sorted(OPTIMIZERS)}, got {self.name!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optimizer.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.warmup_proportion <= 1:
            raise ValueError(f"optimizer.warmup_proportion must be in [0, 1], got {self.warmup_proportion}")


def load_task_config(path: Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read a task's YAML, check its sections and apply ``key.sub=value`` overrides."""
    config = load_yaml(path)
    missing = [name for name in SECTIONS if name not in config]
    unknown = sorted(set(config) - set(SECTIONS))
    if missing or unknown:
        raise ValueError(
            f"{path}: a task config has exactly the sections {list(SECTIONS)}; "
            f"missing {missing}, unknown {unknown}"
        )
    for name in SECTIONS:
        if config[name] is None:
            config[name] = {}
        if not isinstance(config[name], dict):
            raise ValueError(f"{path}: section {name!r} must be a mapping")
    # Every runner and optimizer knob exists (with its default) even when the YAML leaves it
    # out, so any of them can be overridden; data and expert keys are the task's own.
    for name, config_class in (("runner", RunnerConfig), ("optimizer", OptimizerConfig)):
        config[name] = {**dataclasses.asdict(config_class()), **config[name]}
    return apply_overrides(config, overrides)


def runner_sections(config: dict[str, Any]) -> tuple[RunnerConfig, OptimizerConfig]:
    return (
        dataclass_from_dict(RunnerConfig, config["runner"], "runner"),
        dataclass_from_dict(OptimizerConfig, config["optimizer"], "optimizer"),
    )
