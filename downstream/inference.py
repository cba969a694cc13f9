"""Running a trained probe on audio files: predicted labels per frame, utterance or sequence."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from upstream import read_audio
from upstream.audio import check_waveforms
from utility.randomness import seed_everything

from .discovery import TASKS_DIR, load_task
from .probe import ProbeModel
from .probe_checkpoint import RunSpec
from .runner import build_probe, build_upstream_for


# Characters a file name may hold that the one-line-per-file predictions format cannot show.
LINE_BREAKING = ("\n", "\r", "\t")


def load_probe(checkpoint: dict[str, Any], device: torch.device, tasks_dir: Path = TASKS_DIR) -> tuple[RunSpec, ProbeModel]:
    """The trained probe of a checkpoint (no corpus needed: class names travel with it)."""
    spec = RunSpec.from_dict(checkpoint["run"])
    seed_everything(spec.seed)
    upstream = build_upstream_for(spec, device)
    model = build_probe(spec, load_task(spec.task, tasks_dir), upstream, checkpoint["label_names"])
    model.load_trainable_state(checkpoint["weights"])
    return spec, model.eval()


def read_input(path: str | Path, min_samples: int) -> torch.Tensor:
    """One input file as a waveform the upstream accepts; errors name the file."""
    wav = read_audio(path)
    check_waveforms([wav], min_samples, names=[str(path)])
    return wav


@torch.no_grad()
def predict_files(model: ProbeModel, paths: Sequence[str | Path]) -> tuple[list[str | Path], list[list[str]], list[str]]:
    """Predictions (lists of label names) for each usable file, each file on its own.

    Returns the usable paths, their predictions, and one message per unusable file (unreadable,
    empty, too short, not mono, NaN/inf samples, a name holding a newline or tab), naming it.
    """
    usable, predictions, problems = [], [], []
    for path in tqdm(paths, desc="inference", disable=len(paths) < 10):
        if any(character in str(path) for character in LINE_BREAKING):
            problems.append(
                f"{str(path)!r}: its name holds a newline or tab, which would make the predictions' "
                "'path<TAB>labels' lines ambiguous; rename the file"
            )
            continue
        try:
            wav = read_input(path, model.upstream.min_samples)
        except (ValueError, TypeError, OSError) as error:
            problems.append(str(error))
            continue
        features, lengths = model.features([wav])
        usable.append(path)
        predictions.extend(model.expert.predict(features, lengths))
    return usable, predictions, problems


def format_predictions(
    model: ProbeModel, spec: RunSpec, paths: Sequence[str | Path], predictions: list[list[str]], notes: Sequence[str] = ()
) -> str:
    """A header naming the task and the label unit (and ``notes``), then ``path<TAB>labels`` per file."""
    unit = model.expert.prediction_unit
    if unit == "frames":
        shift_ms = 1000 * model.upstream.downsample_rate / model.upstream.sample_rate
        unit = f"one label per {shift_ms:g} ms frame"
    lines = [f"# {spec.task} ({spec.upstream_label}): {unit}", *(f"# {note}" for note in notes)]
    lines += [f"{path}\t{' '.join(labels)}" for path, labels in zip(paths, predictions)]
    return "\n".join(lines) + "\n"
