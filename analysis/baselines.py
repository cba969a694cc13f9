"""The surface features every comparison of learned representations includes.

A pretrained model's probe scores mean something only next to what the same probe reads from
the features the model was computed from: Kaldi fbank (no CMVN), log-mel with and without
per-utterance CMVN, and the model's own input (its front end's features stacked to its frame
rate, no encoder). The papers' claim is that pretraining beats these.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from downstream.discovery import load_task
from upstream import Upstream
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
