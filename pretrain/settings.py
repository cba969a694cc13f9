"""Typed pretraining settings: dataclass defaults <- families/<family>.yaml <- -c file <- -o overrides.

Each knob and its default is written once, in the dataclasses below (with what it means); a
family file sets the values its paper used; ``run_pretrain.py --print-config`` shows the
resolved settings of a run.

The model section starts as the -u preset (``UpstreamConfig`` as a dict), so every field of
the encoder and front end can be changed by name and a misspelt one raises.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from upstream import UpstreamConfig, get_entry
from utility.typed_config import check_choice, dataclass_from_dict
from corpora.audio_check import ACTIONS as UNREADABLE_ACTIONS
from utility.cpu_features import CPU_BF16_CHOICES
from utility.config import absolute_paths, apply_overrides, load_yaml, merge_strict, rename_keys
from utility.update_step import LoopConfig

CONFIG_DIR = Path(__file__).resolve().parent
# Keys renamed when both runners took s3prl's names: old name -> new name. Old command lines,
# -c files and the settings stored in old checkpoints are translated with a notice.
RENAMED = {
    "runner.grad_accumulation": "runner.gradient_accumulate_steps",
    "runner.log_every": "runner.log_step",
    "runner.save_every": "runner.save_step",
    "runner.image_every": "runner.image_step",
    "runner.keep_last": "runner.max_keep",
    "optimizer.grad_clip": "runner.gradient_clipping",
}

# Settings a resumed run cannot change (``-o`` or ``--seed``): they fix the corpus split, the
# held-out set's crops and masks that pick best.ckpt, and every random draw of the exact resume.
RESUME_FIXED = ("runner.seed", "corpus", "masking", "data.max_seconds", "data.corpus_cmvn", "data.corpus_cmvn_utterances")
# Paths stored absolute (``utility.config.absolute_paths``): -e from another folder reads the same data.
PATH_SETTINGS = ("corpus.root",)
# Settings a resumed run restores from its checkpoint (AdamW's learning rate, betas, eps and
# weight decay, the schedule's position), so a changed value would be stored without effect: refused.
RESUME_RESTORED = ("optimizer",)


@dataclass
class CorpusSettings:
    root: Optional[str] = None  # LibriSpeech-layout folder; None: the demo corpus in data/demo
    subsets: list[str] = field(default_factory=lambda: ["train-clean-100"])  # training subsets under root
    dev_subsets: list[str] = field(
        default_factory=lambda: ["dev-clean"]
    )  # held-out subsets for the masked L1 that picks best.ckpt ([]: none)
    dev_utterances: int = 32  # the first N held-out utterances (by id) form the dev set
    on_unreadable: str = "skip"

    def __post_init__(self) -> None:
        check_choice("corpus.on_unreadable", self.on_unreadable, UNREADABLE_ACTIONS)
        if self.dev_utterances < 0:
            raise ValueError(f"corpus.dev_utterances must be >= 0 (0: no held-out set), got {self.dev_utterances}")


@dataclass
class DataSettings:
    batch_size: int = 32  # utterances per optimizer update, over all processes and accumulation steps
    max_seconds: float = 15.0  # longer utterances are randomly cropped to this (a new crop each time)
    bucket_batches: int = 50  # length bucketing: sort this many batches' worth of utterances by length
    num_workers: int = 2  # DataLoader workers computing features and masks
    # Standardise inputs and targets with statistics of the training corpus instead of per
    # utterance (pretrain/corpus_stats.py): keeps the spectral mean, the speaker's strongest cue.
    corpus_cmvn: bool = False
    corpus_cmvn_utterances: int = 200  # training utterances the statistics are taken from

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.bucket_batches < 1 or self.num_workers < 0:
            raise ValueError("data.batch_size and data.bucket_batches must be >= 1, data.num_workers >= 0")
        if self.corpus_cmvn_utterances < 1:
            raise ValueError(f"data.corpus_cmvn_utterances must be >= 1, got {self.corpus_cmvn_utterances}")
        if self.max_seconds <= 0:
            raise ValueError(f"data.max_seconds must be > 0, got {self.max_seconds}")


@dataclass
class MaskingSettings:
    proportion: float = 0.15  # fraction of stacked frames selected
    span: Optional[int] = None  # consecutive stacked frames per span; None: 7 when R = 1, else 1 (the papers)
    zero_probability: float = 0.8  # per utterance: zero the selected frames ...
    random_probability: float = 0.1  # ... or replace them with random frames of the utterance (else keep them)
    frequency_width: int = 0  # > 0: also zero a random band of up to this many input channels per utterance
    noise_proportion: float = 0.0  # fraction of utterances that get Gaussian noise added to their input
    noise_std: float = 0.2  # standard deviation of that noise (inputs are CMVN-normalised)

    def __post_init__(self) -> None:
        if not 0 < self.proportion <= 1:
            raise ValueError(f"masking.proportion must be in (0, 1], got {self.proportion}")
        if self.span is not None and self.span < 1:
            raise ValueError(f"masking.span must be >= 1 (or null), got {self.span}")
        if min(self.zero_probability, self.random_probability) < 0 or self.zero_probability + self.random_probability > 1:
            raise ValueError("masking.zero_probability and random_probability must be >= 0 and sum to at most 1")
        if not 0 <= self.noise_proportion <= 1 or self.frequency_width < 0:
            raise ValueError("masking.noise_proportion must be in [0, 1] and frequency_width >= 0")
        if self.noise_std < 0:
            raise ValueError(f"masking.noise_std must be >= 0, got {self.noise_std}")

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
    lr: float = 2.0e-4  # peak learning rate (AdamW)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1.0e-8
    weight_decay: float = 0.01  # not applied to biases and LayerNorm weights
    warmup_proportion: float = 0.07  # linear warm-up over this fraction of total_steps, then linear decay to 0

    def __post_init__(self) -> None:
        if self.lr <= 0 or not 0 <= self.warmup_proportion <= 1:
            raise ValueError(
                f"optimizer.lr must be > 0 (got {self.lr}) and warmup_proportion in [0, 1] (got {self.warmup_proportion})"
            )
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"optimizer.betas must be two numbers in [0, 1), got {self.betas}")
        if self.eps <= 0 or self.weight_decay < 0:
            raise ValueError(f"optimizer.eps must be > 0 (got {self.eps}) and weight_decay >= 0 (got {self.weight_decay})")


@dataclass
class RunnerSettings(LoopConfig):
    """The loop: s3prl's key names, shared with the probing runner (``utility.update_step.LoopConfig``).
    At every ``save_step`` (and at the end) the held-out masked L1 is measured and a checkpoint
    written; ``best.ckpt`` is the one with the lowest held-out L1 (without a held-out set, the
    newest checkpoint; its metadata ``best_chosen_by`` says which)."""

    total_steps: int = 500000  # optimizer updates
    gradient_clipping: float = 5.0  # max global gradient norm (0: no clipping)
    log_step: int = 50  # steps between scalar logs
    save_step: int = 10000  # steps between checkpoints (also one at the end)
    max_keep: int = 3  # step checkpoints kept besides best.ckpt
    image_step: int = 1000  # steps between input / masked / prediction / target images (0: none)
    amp: bool = True  # autocast on GPU (bf16 if supported, else fp16 with loss scaling)
    # bf16 autocast on the CPU too: on (true), off (false), or auto = on exactly where the CPU has
    # native bf16 (AVX512-BF16 / AMX: 3-4x faster matrix products; elsewhere bf16 is slower).
    cpu_bf16: str = "off"
    activation_checkpointing: bool = False  # recompute layer activations in backward: less memory, ~35% slower
    seed: int = 1337
    # > 0: a wall-clock budget in minutes for a new run; total_steps is then set from the measured
    # step time so that warm-up and decay span the budget (a short run ends at lr 0, not mid-decay).
    max_minutes: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_minutes < 0:
            raise ValueError(f"runner.max_minutes must be >= 0 (0: use total_steps), got {self.max_minutes}")
        if self.seed < 0:
            raise ValueError(f"runner.seed (--seed) must be >= 0, got {self.seed}")
        if self.image_step < 0:
            raise ValueError(f"runner.image_step must be >= 0 (0: no images), got {self.image_step}")
        check_choice("runner.cpu_bf16", self.cpu_bf16, CPU_BF16_CHOICES)


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
        model = UpstreamConfig.from_dict(data["model"], source=f"{source}.model")
        if model.encoder is None:
            raise ValueError(f"{source}: upstream {data['upstream']!r} has no encoder to pretrain")
        built = {name: dataclass_from_dict(kind, data[name], f"{source}.{name}") for name, kind in SECTIONS.items()}
        return cls(upstream=str(data["upstream"]), model=model, **built)


SECTIONS = {
    "corpus": CorpusSettings,
    "data": DataSettings,
    "masking": MaskingSettings,
    "optimizer": OptimizerSettings,
    "runner": RunnerSettings,
}


def stored_settings(data: dict[str, Any], source: str) -> PretrainSettings:
    """Settings stored in a checkpoint by any version: renamed keys translated, keys added since
    filled in at their defaults."""
    data = rename_keys(data, RENAMED, source)
    for name, kind in SECTIONS.items():
        data[name] = {**dataclasses.asdict(kind()), **data.get(name, {})}
    return PretrainSettings.from_dict(data, source=source)


def default_settings_dict(upstream: str) -> dict[str, Any]:
    """config.yaml, the family's paper values and the preset model, as one nested dict."""
    entry = get_entry(upstream)
    preset = entry.preset()
    if preset.encoder is None:
        raise ValueError(f"upstream {upstream!r} is a plain-feature baseline: there is nothing to pretrain")
    data = {"upstream": upstream, "model": preset.to_dict()}
    data.update({name: dataclasses.asdict(kind()) for name, kind in SECTIONS.items()})
    family_file = CONFIG_DIR / "families" / f"{entry.family}.yaml"
    if family_file.is_file():
        data = merge_strict(data, load_yaml(family_file), str(family_file))
    return data


def load_settings(upstream: str, config_file: Optional[str | Path] = None, overrides: Sequence[str] = ()) -> PretrainSettings:
    """Settings for pretraining ``upstream`` (a registered name), with a user YAML and overrides."""
    data = default_settings_dict(upstream)
    if config_file is not None:
        user = rename_keys(load_yaml(config_file), RENAMED, str(config_file))
        if "upstream" in user and user["upstream"] != upstream:
            raise ValueError(f"{config_file} is for upstream {user['upstream']!r}, but -u is {upstream!r}")
        data = merge_strict(data, user, str(config_file))
    data = absolute_paths(apply_overrides(data, overrides, RENAMED), PATH_SETTINGS, "settings")
    return PretrainSettings.from_dict(data)
