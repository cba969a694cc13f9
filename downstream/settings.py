"""A task's run settings: dataclass defaults <- the task's ``config.yaml`` (or ``-c FILE``) <- ``-o``.

A task config has up to four sections. ``runner`` and ``optimizer`` are typed below and read by
the runner; ``data`` goes to the task's ``build_datasets`` (typed by the task's ``DataConfig``)
and ``expert`` to its ``DownstreamExpert`` (typed by its ``config_class``). A task's YAML states
only what differs from these defaults; every key can still be overridden with ``-o``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from utility.typed_config import check_choice, dataclass_from_dict
from corpora.audio_check import ACTIONS as UNREADABLE_ACTIONS
from utility.config import apply_overrides, defaults, load_yaml, merge_strict, rename_keys
from utility.update_step import LoopConfig

from .discovery import Task
from .feature_cache import FeatureCacheConfig
from .feature_cache import check_settings as check_cache_settings
from .subset import check_proportion

SECTIONS = ("runner", "optimizer", "data", "expert")
OPTIMIZERS = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW, "SGD": torch.optim.SGD}
SCHEDULES = ("constant", "linear")
# Keys renamed when both runners took s3prl's names: old name -> new name.
RENAMED = {"runner.keep_last": "runner.max_keep"}
# Settings a resumed run cannot change: they fix the data split, the training share and the
# batch plan that an exact resume continues (``utility.config.check_resume_unchanged``).
RESUME_FIXED = ("data", "runner.train_proportion", "runner.batch_size")
# Paths stored absolute (``utility.config.absolute_paths``): -e from another folder reads the same
# data. Keys a task's data section lacks are skipped.
PATH_SETTINGS = ("data.root", "data.test_root", "data.split_dir", "data.label_dir", "runner.feature_cache_dir")
# Settings a resumed run restores from its checkpoint (the optimizer's rates and state, the
# schedule's position), so a changed value would be stored without effect: refused.
RESUME_RESTORED = ("optimizer",)
# Keys added since runs were first stored, whose behaviour before differs from today's default:
# a stored run keeps the behaviour it was trained with.
BEFORE_ADDED = {"runner": {"feature_cache": "off", "feature_cache_dtype": "float32"}}


@dataclass
class RunnerConfig(LoopConfig):
    """Steps count optimizer updates; each update sees ``batch_size`` x
    ``gradient_accumulate_steps`` utterances (per process under torchrun). Dev is evaluated
    every ``eval_step`` updates, with a step checkpoint; ``save_step`` adds checkpoints between."""

    total_steps: int = 1000
    gradient_clipping: float = 1.0
    log_step: int = 50
    save_step: int = 1000
    max_keep: int = 1
    batch_size: int = 8
    eval_batch_size: int = 8
    eval_step: int = 200
    # > 0: stop when dev has not improved for this many evaluations (total_steps stays the cap).
    early_stopping_patience: int = 0
    train_proportion: float = 1.0  # seeded share of the training utterances, in (0, 1]
    num_workers: int = 0  # DataLoader processes reading audio
    # Frozen upstreams: hidden states computed once and served from a store (downstream/feature_cache.py).
    # auto: memory when the estimate fits feature_cache_memory_gb, else disk, else off; fine-tuning: off.
    feature_cache: str = "auto"
    feature_cache_dir: Optional[str] = None  # disk stores live here (None: EXPDIR/feature_cache); share it across runs
    feature_cache_dtype: str = "float16"  # storage precision: float16, bfloat16 or float32
    feature_cache_memory_gb: float = 4.0  # auto: the most a memory cache may hold
    on_unreadable: str = "stop"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_cache_settings(self.feature_cache, self.feature_cache_dtype, self.feature_cache_memory_gb)
        for name in ("batch_size", "eval_batch_size", "eval_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"runner.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.num_workers < 0 or self.early_stopping_patience < 0:
            raise ValueError(
                "runner.num_workers and early_stopping_patience must be >= 0, "
                f"got {self.num_workers} and {self.early_stopping_patience}"
            )
        check_choice("runner.on_unreadable", self.on_unreadable, UNREADABLE_ACTIONS)
        self.train_proportion = check_proportion(self.train_proportion)

    def feature_cache_config(self, expdir: Path) -> FeatureCacheConfig:
        """The feature cache's settings; disk stores under ``EXPDIR/feature_cache`` unless
        ``feature_cache_dir`` names another folder."""
        folder = Path(self.feature_cache_dir) if self.feature_cache_dir else Path(expdir) / "feature_cache"
        return FeatureCacheConfig(
            self.feature_cache, folder, self.feature_cache_dtype, self.feature_cache_memory_gb, self.num_workers
        )


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
        check_choice("optimizer.name", self.name, sorted(OPTIMIZERS))
        check_choice("optimizer.schedule", self.schedule, SCHEDULES)
        if self.lr <= 0 or (self.upstream_lr is not None and self.upstream_lr <= 0):
            raise ValueError(f"optimizer.lr and upstream_lr must be > 0, got {self.lr} and {self.upstream_lr}")
        if not 0 <= self.warmup_proportion <= 1:
            raise ValueError(f"optimizer.warmup_proportion must be in [0, 1], got {self.warmup_proportion}")
        if self.weight_decay < 0:
            raise ValueError(f"optimizer.weight_decay must be >= 0, got {self.weight_decay}")


def task_defaults(task: Task) -> dict[str, Any]:
    """Every section with every key at its default (data: ``{}`` when the task types none)."""
    return {
        "runner": defaults(RunnerConfig),
        "optimizer": defaults(OptimizerConfig),
        "data": defaults(task.data_config_class) if task.data_config_class is not None else {},
        "expert": defaults(task.expert_class.config_class),
    }


def _merge(base: dict[str, Any], update: dict[str, Any], task: Task, source: str) -> dict[str, Any]:
    unknown = sorted(set(update) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {unknown}; a task config has {list(SECTIONS)}")
    update = rename_keys({name: value or {} for name, value in update.items()}, RENAMED, source)
    for name, section in update.items():
        if not isinstance(section, dict):
            raise ValueError(f"{source}: section {name!r} must be a mapping")
    if task.data_config_class is None:  # an untyped data section is the task's own business
        base = {**base, "data": {**base["data"], **update.get("data", {})}}
        update = {name: value for name, value in update.items() if name != "data"}
    return merge_strict(base, update, source)


def load_task_config(task: Task, config_file: Optional[Path] = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The defaults, then the task's YAML files (a variant's after its base's) or ``config_file``
    instead, then the ``key.sub=value`` overrides."""
    config = task_defaults(task)
    for path in [Path(config_file)] if config_file is not None else task.config_files:
        data = load_yaml(path)
        data.pop("extends", None)
        config = _merge(config, data, task, str(path))
    return apply_overrides(config, overrides, RENAMED)


def complete_task_config(task: Task, stored: dict[str, Any], source: str) -> dict[str, Any]:
    """A config stored by an earlier run, with keys renamed since and keys added since filled
    in: at the behaviour the run had (``BEFORE_ADDED``), else at their defaults."""
    base = task_defaults(task)
    for section, values in BEFORE_ADDED.items():
        base[section].update({key: value for key, value in values.items() if key not in stored.get(section, {})})
    return _merge(base, stored, task, source)


def runner_sections(config: dict[str, Any]) -> tuple[RunnerConfig, OptimizerConfig]:
    return (
        dataclass_from_dict(RunnerConfig, config["runner"], "runner"),
        dataclass_from_dict(OptimizerConfig, config["optimizer"], "optimizer"),
    )
