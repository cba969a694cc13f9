"""The surface features every comparison of learned representations includes.

A pretrained model's probe scores mean something only next to what the same probe reads from
the features the model was computed from: Kaldi fbank (no CMVN), log-mel with and without
per-utterance CMVN, and the model's own input (its front end's features stacked to its frame
rate, no encoder). The papers' claim is that pretraining beats these.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Optional, Sequence

from downstream.discovery import load_task
from upstream import Upstream, get_entry
from upstream.files import read_upstream_checkpoint
from upstream.presets import model_input_config

from .cells import UpstreamChoice

SURFACE = ("fbank", "mel", "mel_raw")


def baseline_choices(networks: Sequence[tuple[str, str]]) -> list[UpstreamChoice]:
    """fbank, mel and mel_raw, then ``model_input`` of each distinct front end and frame rate
    among the Transformer ``networks`` ((label, checkpoint) pairs): labelled ``model_input`` when
    they all share one, else ``model_input_<label>`` after the first network with each."""
    inputs: dict[str, tuple[str, str]] = {}
    for label, ckpt in networks:
        config = model_input_config(read_upstream_checkpoint(ckpt)[0])
        inputs.setdefault(json.dumps(config.to_dict(), sort_keys=True), (label, ckpt))
    choices = [UpstreamChoice(name) for name in SURFACE]
    for label, ckpt in inputs.values():
        choices.append(UpstreamChoice("model_input", ckpt, "model_input" if len(inputs) == 1 else f"model_input_{label}"))
    return choices


def is_baseline(choice: UpstreamChoice) -> bool:
    """Whether ``choice`` is plain features (fbank, mel, mel_raw, model_input), not a network."""
    return get_entry(choice.name).family == "baseline"


def transformer_networks(choices: Sequence[UpstreamChoice]) -> list[tuple[str, str]]:
    """(label, checkpoint) of the ``choices`` that are Transformer networks with a checkpoint:
    those whose own input ``model_input`` can be read (random weights without a file have none)."""
    networks = []
    for choice in choices:
        entry = get_entry(choice.name)
        # Entries with a builder (torchaudio's models, model_input) have no Transformer configuration.
        if choice.ckpt and entry.builder is None and entry.preset().encoder is not None:
            networks.append((choice.label, choice.ckpt))
    return networks


def missing_baselines(choices: Sequence[UpstreamChoice]) -> list[UpstreamChoice]:
    """The baselines of the networks among ``choices`` (``baseline_choices``) that ``choices``
    do not list under the same label; none when ``choices`` holds no network (plain features
    only: nothing to compare them with)."""
    if all(is_baseline(choice) for choice in choices):
        return []
    listed = {choice.label for choice in choices}
    return [choice for choice in baseline_choices(transformer_networks(choices)) if choice.label not in listed]


def pools_to_constant(model: Upstream) -> bool:
    """Plain features normalised per utterance (mel, and the own input of a network fed with
    them): every utterance's mean over its frames is zero (or, stacked, nearly so)."""
    config = getattr(model, "config", None)
    return config is not None and config.encoder is None and config.frontend.cmvn


def probes_with(model: Upstream, task: str, tasks_dir: Path) -> bool:
    """Whether ``task`` can read ``model`` at all: a pooled task cannot read features that pool
    to the same vector for every utterance (``pools_to_constant``)."""
    pools = load_task(task, tasks_dir).expert_class.prediction_unit == "utterance"
    return not (pools and pools_to_constant(model))


def baseline_values(rows: Sequence[dict[str, Any]], task: str, proportion: float = 1.0) -> dict[str, list[float]]:
    """Each surface baseline's test values on ``task`` with ``proportion`` of the training labels, one
    per probe seed: ``result_row`` rows with a ``kind`` (``baseline`` for the surface features)."""
    values: dict[str, list[float]] = {}
    for row in rows:
        if row["kind"] == "baseline" and row["task"] == task and row["train_proportion"] == proportion:
            values.setdefault(row["upstream"], []).append(row["test"])
    return values


def best_baseline(rows: Sequence[dict[str, Any]], task: str, proportion: float = 1.0) -> Optional[tuple[str, list[float]]]:
    """The surface baseline with the best mean test value on ``task`` with ``proportion`` of the
    labels (None: none probed yet)."""
    values = baseline_values(rows, task, proportion)
    if not values:
        return None
    higher = next(row["higher_is_better"] for row in rows if row["task"] == task)
    pick = max if higher else min
    name = pick(values, key=lambda label: statistics.mean(values[label]))
    return name, values[name]
