"""Typed pretraining settings: config.yaml <- families/<family>.yaml <- -c file <- -o overrides.

The dataclasses have no defaults on purpose: every value comes from config.yaml, the one place
each knob is written (and documented).

The model section starts as the -u preset (``UpstreamConfig`` as a dict), so every field of
the encoder and front end can be changed by name and a misspelt one raises.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from upstream import EncoderConfig, FrontendConfig, UpstreamConfig, get_entry
from upstream.config import dataclass_from_dict
from utility.run_config import apply_overrides, load_yaml

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = CONFIG_DIR / "config.yaml"
UNREADABLE_ACTIONS = ("skip", "stop")


@dataclass
class CorpusSettings:
    root: Optional[str]
    subsets: list[str]
    dev_subsets: list[str]
    dev_utterances: int
    on_unreadable: str

    def __post_init__(self) -> None:
        if self.on_unreadable not in UNREADABLE_ACTIONS:
            raise ValueError(f"corpus.on_unreadable must be one of {UNREADABLE_ACTIONS}, got {self.on_unreadable!r}")


@dataclass
class DataSettings:
    batch_size: int
    max_seconds: float
    bucket_batches: int
    num_workers: int

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.bucket_batches < 1 or self.num_workers < 0:
            raise ValueError("data.batch_size and data.bucket_batches must be >= 1, data.num_workers >= 0")
        if self.max_seconds <= 0:
            raise ValueError(f"data.max_seconds must be > 0, got {self.max_seconds}")


@dataclass
class MaskingSettings:
    proportion: float
    span: Optional[int]
    zero_probability: float
    random_probability: float
    frequency_width: int
    noise_proportion: float
    noise_std: float

    def __post_init__(self) -> None:
        if not 0 < self.proportion <= 1:
            raise ValueError(f"masking.proportion must be in (0, 1], got {self.proportion}")
        if self.span is not None and self.span < 1:
            raise ValueError(f"masking.span must be >= 1 (or null), got {self.span}")
        if min(self.zero_probability, self.random_probability) < 0 or self.zero_probability + self.random_probability > 1:
            raise ValueError("masking.zero_probability and random_probability must be >= 0 and sum to at most 1")
        if not 0 <= self.noise_proportion <= 1 or self.frequency_width < 0:
            raise ValueError("masking.noise_proportion must be in [0, 1] and frequency_width >= 0")

    def span_for(self, downsample_rate: int) -> int:
        """Span length in stacked frames: the papers mask 7 frames at R = 1, one stacked step otherwise."""
        if self.span is not None:
            return self.span
        return 7 if downsample_rate == 1 else 1

    def min_stacked_frames(self, downsample_rate: int) -> int:
        """Shortest utterance (in stacked frames) that holds one span at the masking proportion."""
        return math.ceil(self.span_for(downsample_rate) / self.proportion)


@dataclass
class OptimizerSettings:
    lr: float
    betas: list[float]
    eps: float
    weight_decay: float
    warmup_proportion: float
    grad_clip: float

    def __post_init__(self) -> None:
        if self.lr <= 0 or not 0 <= self.warmup_proportion <= 1 or self.grad_clip < 0:
            raise ValueError("optimizer.lr must be > 0, warmup_proportion in [0, 1], grad_clip >= 0")


@dataclass
class RunnerSettings:
    total_steps: int
    grad_accumulation: int
    log_every: int
    image_every: int
    save_every: int
    keep_last: int
    amp: bool
    cpu_bf16: bool
    activation_checkpointing: bool
    seed: int

    def __post_init__(self) -> None:
        for name in ("total_steps", "grad_accumulation", "log_every", "save_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"runner.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class PretrainSettings:
    """Everything a pretraining run needs; ``to_dict()`` is stored in every checkpoint."""

    upstream: str
    model: UpstreamConfig
    corpus: CorpusSettings
    data: DataSettings
    masking: MaskingSettings
    optimizer: OptimizerSettings
    runner: RunnerSettings

    @property
    def warmup_steps(self) -> int:
        return round(self.optimizer.warmup_proportion * self.runner.total_steps)

    @property
    def downsample_rate(self) -> int:
        return self.model.encoder.downsample_rate

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model"] = self.model.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "PretrainSettings":
        expected = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(data) - expected), sorted(expected - set(data))
        if unknown or missing:
            raise ValueError(f"{source}: unknown sections {unknown}, missing sections {missing}")
        model_data = dict(data["model"])
        for part, kind in (("frontend", FrontendConfig), ("encoder", EncoderConfig)):
            if isinstance(model_data.get(part), dict):
                model_data[part] = _checked_types(kind, model_data[part], f"{source}.model.{part}")
        model = UpstreamConfig.from_dict(model_data, source=f"{source}.model")
        if model.encoder is None:
            raise ValueError(f"{source}: upstream {data['upstream']!r} has no encoder to pretrain")
        sections = {
            "corpus": CorpusSettings,
            "data": DataSettings,
            "masking": MaskingSettings,
            "optimizer": OptimizerSettings,
            "runner": RunnerSettings,
        }
        built = {
            name: dataclass_from_dict(kind, _checked_types(kind, data[name], f"{source}.{name}"), f"{source}.{name}")
            for name, kind in sections.items()
        }
        return cls(upstream=str(data["upstream"]), model=model, **built)


def _checked_types(cls: type, data: dict[str, Any], source: str) -> dict[str, Any]:
    """``data`` with each value checked against the field types of dataclass ``cls``.

    YAML reads ``2e-4`` (no dot) as a string, so numeric strings are accepted for float fields;
    anything else of the wrong type raises, naming the key.
    """
    if not isinstance(data, dict):
        raise TypeError(f"{source}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    checked = dict(data)
    for key, value in data.items():
        hint = hints.get(key)
        if hint is None or value is None:
            continue  # unknown keys are reported by dataclass_from_dict; None means "default"
        expected = typing.get_origin(hint) or hint
        if expected in (typing.Union, types.UnionType):
            expected = next(a for a in typing.get_args(hint) if a is not type(None))
            expected = typing.get_origin(expected) or expected
        if expected is float and isinstance(value, str):
            try:
                checked[key] = float(value)
                continue
            except ValueError:
                pass
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            checked[key] = float(value)
        elif expected in (int, float, str, bool, list, dict) and (
            not isinstance(value, expected) or (expected is int and isinstance(value, bool))
        ):
            raise TypeError(f"{source}.{key} must be {expected.__name__}, got {value!r}")
    return checked


def merge_strict(base: dict[str, Any], update: dict[str, Any], source: str) -> dict[str, Any]:
    """``base`` with ``update`` merged in recursively; a key ``base`` lacks raises, naming ``source``."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if key not in merged:
            raise ValueError(f"{source}: unknown key {key!r}; known keys: {sorted(merged)}")
        if isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = merge_strict(merged[key], value, f"{source}.{key}")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def default_settings_dict(upstream: str) -> dict[str, Any]:
    """config.yaml, the family's paper values and the preset model, as one nested dict."""
    entry = get_entry(upstream)
    preset = entry.preset()
    if preset.encoder is None:
        raise ValueError(f"upstream {upstream!r} is a plain-feature baseline: there is nothing to pretrain")
    data = {"upstream": upstream, "model": preset.to_dict(), **load_yaml(DEFAULT_CONFIG)}
    family_file = CONFIG_DIR / "families" / f"{entry.family}.yaml"
    if family_file.is_file():
        data = merge_strict(data, load_yaml(family_file), str(family_file))
    return data


def load_settings(
    upstream: str, config_file: Optional[str | Path] = None, overrides: Sequence[str] = ()
) -> PretrainSettings:
    """Settings for pretraining ``upstream`` (a registered name), with a user YAML and overrides."""
    data = default_settings_dict(upstream)
    if config_file is not None:
        user = load_yaml(config_file)
        if "upstream" in user and user["upstream"] != upstream:
            raise ValueError(f"{config_file} is for upstream {user['upstream']!r}, but -u is {upstream!r}")
        data = merge_strict(data, user, str(config_file))
    data = apply_overrides(data, overrides)
    return PretrainSettings.from_dict(data)
