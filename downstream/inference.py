"""Running a trained probe on audio files: predicted labels per frame, utterance or sequence."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from upstream import read_audio
from utility.training import seed_everything

from .discovery import TASKS_DIR, load_task
from .probe import ProbeModel
from .probe_checkpoint import RunSpec
from .runner import build_probe, build_upstream_for


def load_probe(checkpoint: dict[str, Any], device: torch.device, tasks_dir: Path = TASKS_DIR) -> tuple[RunSpec, ProbeModel]:
    """The trained probe of a checkpoint (no corpus needed: class names travel with it)."""
    spec = RunSpec.from_dict(checkpoint["run"])
    seed_everything(spec.seed)
    upstream = build_upstream_for(spec, device)
    model = build_probe(spec, load_task(spec.task, tasks_dir), upstream, checkpoint["label_names"])
    model.load_trainable_state(checkpoint["weights"])
    return spec, model.eval()


@torch.no_grad()
def predict_files(model: ProbeModel, paths: Sequence[str | Path]) -> list[list[str]]:
    """One prediction (a list of label names) per audio file, each file on its own."""
    predictions = []
    for path in tqdm(paths, desc="inference", disable=len(paths) < 10):
        features, lengths = model.features([read_audio(path)])
        predictions.extend(model.expert.predict(features, lengths))
    return predictions


def format_predictions(model: ProbeModel, spec: RunSpec, paths: Sequence[str | Path], predictions: list[list[str]]) -> str:
    """A header naming the task and the label unit, then ``path<TAB>labels`` per file."""
    unit = model.expert.prediction_unit
    if unit == "frames":
        shift_ms = 1000 * model.upstream.downsample_rate / model.upstream.sample_rate
        unit = f"one label per {shift_ms:g} ms frame"
    lines = [f"# {spec.task} ({spec.upstream_label}): {unit}"]
    lines += [f"{path}\t{' '.join(labels)}" for path, labels in zip(paths, predictions)]
    return "\n".join(lines) + "\n"
