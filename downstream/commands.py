"""What each ``run_downstream.py`` mode does: parsed command-line arguments in, calls of the
experiment API (``downstream.experiment``) out."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional

from utility.atomic_write import write_text_atomic
from utility.cli import check_output_is_not_an_input
from utility.process_group import init_distributed

from . import experiment
from .inference import format_predictions, load_probe, predict_files
from .probe_checkpoint import RunSpec, read_located_checkpoint
from .runner import RESULTS
from .upstream_file import check_upstream_file, moved_upstream

DEFAULT_ROOT = Path("result") / "downstream"
DEFAULT_SEED = 1337  # --seed: weights, batches and the train_proportion draw


def default_name(spec: RunSpec) -> str:
    """TASK_UPSTREAM, plus what else tells two runs of them apart (one hidden state, a
    fine-tuned upstream, another seed): ``-l 3`` after the weighted-sum run is a new run in a
    folder of its own, not a collision with advice to resume a run it cannot resume."""
    parts = [spec.task, spec.upstream_label]
    if spec.layer is not None:
        parts.append(f"layer{spec.layer}")
    if spec.fine_tune:
        parts.append("finetune")
    if spec.seed != DEFAULT_SEED:
        parts.append(f"seed{spec.seed}")
    return "_".join(parts)


def experiment_dir(args: argparse.Namespace, spec: RunSpec) -> Path:
    if args.expdir is not None:
        return Path(args.expdir)
    return DEFAULT_ROOT / (args.expname or default_name(spec))


def _refuse_run_options(args: argparse.Namespace, what: str, allowed: str, k_moves_upstream: bool = False) -> None:
    """``-e`` uses the probe's saved settings: refuse the options that define a new run instead
    of ignoring them (``k_moves_upstream``: ``-k`` names where the upstream file is now)."""
    given = [
        flag
        for flag, value in (
            ("-u", args.upstream),
            ("-k", None if k_moves_upstream else args.upstream_ckpt),
            ("-d", args.downstream),
            ("-c", args.config),
            ("-l", args.layer),
            ("-f", args.finetune or None),
            ("--seed", args.seed),
        )
        if value is not None
    ]
    if given:
        raise ValueError(f"{what} with its own saved settings; {', '.join(given)} cannot change them ({allowed})")


def train(args: argparse.Namespace) -> dict[str, Any]:
    if args.past_exp is not None:
        _refuse_run_options(args, "-e resumes a run", "config values can: -o key=value")
        return experiment.resume(
            args.past_exp,
            overrides=args.override,
            skip_damaged=args.skip_damaged,
            allow_upstream_change=args.allow_upstream_change,
            tasks_dir=args.tasks_dir,
            device=args.device,
        )
    if args.downstream is None:
        raise ValueError("choose a task with -d (see -h for the list), or resume a run with -e EXPDIR")
    spec = experiment.new_spec(
        args.downstream,
        args.upstream,
        args.upstream_ckpt,
        layer=args.layer,
        fine_tune=args.finetune,
        seed=DEFAULT_SEED if args.seed is None else args.seed,
        config_file=args.config,
        overrides=args.override,
        tasks_dir=args.tasks_dir,
    )
    return experiment.train(spec, experiment_dir(args, spec), tasks_dir=args.tasks_dir, device=args.device)


def evaluate(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    if args.past_exp is None:
        raise ValueError("evaluate needs the experiment to evaluate: -e EXPDIR (its best.ckpt) or -e FILE.ckpt")
    _refuse_run_options(
        args, "-m evaluate scores a probe", "config values can: -o key=value; -k FILE: where the upstream file is now", True
    )
    metrics = experiment.evaluate(
        args.past_exp,
        splits=args.split or ["dev", "test"],
        overrides=args.override,
        upstream_ckpt=args.upstream_ckpt,
        allow_upstream_change=args.allow_upstream_change,
        tasks_dir=args.tasks_dir,
        device=args.device,
    )
    for split, values in metrics.items() if int(os.environ.get("RANK", "0")) == 0 else ():
        print(f"{split}: " + ", ".join(f"{name} {value:.4f}" for name, value in values.items()))
    return metrics


def inference(args: argparse.Namespace) -> list[list[str]]:
    """Predictions for every usable input file; the unusable ones are named in one error at the end."""
    if args.past_exp is None or not args.inputs:
        raise ValueError("inference needs a trained probe and audio files: -e EXPDIR -i FILE [FILE ...]")
    _refuse_run_options(args, "-m inference applies a probe", "-k FILE: where the upstream file is now", True)
    if args.override:
        raise ValueError(
            f"-m inference applies a probe with its saved settings; -o {' '.join(args.override)} would not be used: drop it"
        )
    path, checkpoint = read_located_checkpoint(args.past_exp, prefer_best=True)
    moved_upstream(checkpoint, args.upstream_ckpt)
    upstream_file = check_upstream_file(checkpoint, path, args.allow_upstream_change)
    check_output_is_not_an_input(args.output, [*args.inputs, path, checkpoint["run"]["upstream_ckpt"]], "--output")
    _check_output_is_not_the_runs(args.output, path.parent)
    spec, model = load_probe(checkpoint, init_distributed(args.device).device, args.tasks_dir)
    usable, predictions, problems = predict_files(model, args.inputs)
    notes = []
    if upstream_file is not None and "replaced" in upstream_file:
        notes.append(
            f"upstream checkpoint {upstream_file['path']} has changed since the probe was trained (--allow-upstream-change)"
        )
    text = format_predictions(model, spec, usable, predictions, notes)
    if args.output:
        write_text_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    if problems:
        where = f"in {args.output}" if args.output else "above"
        raise ValueError(
            f"{len(problems)} of {len(args.inputs)} input file(s) could not be used: {'; '.join(problems)} "
            f"(predictions for the other {len(usable)} are {where})"
        )
    return predictions


def _check_output_is_not_the_runs(output: Optional[str], expdir: Path) -> None:
    """Refuse an inference ``--output`` that is a file of the probe's experiment folder (its
    results, checkpoints, settings, logs) or a name the run writes there: predictions would
    replace what the run owns."""
    if output is None:
        return
    target, folder = Path(output).resolve(), expdir.resolve()
    owned_name = target.parent == folder and (target.name in (RESULTS, experiment.EVALUATION) or target.suffix == ".ckpt")
    if target.is_relative_to(folder) and (target.exists() or owned_name):
        raise ValueError(
            f"--output {output} is a file of the experiment folder {expdir}, which the run owns; "
            "writing predictions there would replace it: give a path outside that folder"
        )


MODES = {"train": train, "evaluate": evaluate, "inference": inference}
