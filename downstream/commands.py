"""What each ``run_downstream.py`` mode does, from parsed command-line arguments."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

from upstream import get_entry
from utility.config import apply_overrides
from utility.training import DistributedContext, cleanup_distributed, init_distributed

from .discovery import load_task
from .inference import format_predictions, load_probe, predict_files
from .probe_checkpoint import RunSpec, locate_checkpoint, read_probe_checkpoint
from .runner import RESULTS, Runner, write_json
from .settings import RENAMED, complete_task_config, load_task_config

DEFAULT_ROOT = Path("result") / "downstream"
EVALUATION = "evaluation.json"


def experiment_dir(args: argparse.Namespace, spec: RunSpec) -> Path:
    if args.expdir is not None:
        return Path(args.expdir)
    return DEFAULT_ROOT / (args.expname or f"{spec.task}_{spec.upstream_label}")


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    if args.upstream is None and args.upstream_ckpt is None:
        raise ValueError("give an upstream name with -u (see -h for the list) or an upstream checkpoint with -k")
    if args.upstream is not None:
        get_entry(args.upstream)  # an unknown name raises here, listing the available ones
    task = load_task(args.downstream, args.tasks_dir)
    return RunSpec(
        task=args.downstream,
        upstream=args.upstream,
        upstream_ckpt=args.upstream_ckpt,
        layer=args.layer,
        fine_tune=args.finetune,
        seed=args.seed,
        config=load_task_config(task, args.config, args.override),
    )


def checkpoint_spec(checkpoint: dict[str, Any], overrides: list[str], tasks_dir: Path, source: Path) -> RunSpec:
    """The saved run (its config brought up to date), with command-line overrides applied."""
    spec = RunSpec.from_dict(checkpoint["run"])
    config = complete_task_config(load_task(spec.task, tasks_dir), spec.config, str(source))
    spec.config = apply_overrides(config, overrides, RENAMED)
    return spec


def run_context(args: argparse.Namespace) -> DistributedContext:
    return init_distributed(args.device)


def train(args: argparse.Namespace) -> dict[str, Any]:
    checkpoint: Optional[dict[str, Any]] = None
    if args.past_exp is not None:
        fixed = [flag for flag, value in (("-u", args.upstream), ("-k", args.upstream_ckpt), ("-d", args.downstream),
                 ("-c", args.config), ("-l", args.layer), ("-f", args.finetune or None)) if value is not None]
        if fixed:
            raise ValueError(
                f"-e resumes a run with its own saved settings; {', '.join(fixed)} cannot change them "
                "(config values can: -o key=value)"
            )
        path = locate_checkpoint(args.past_exp, prefer_best=False)
        checkpoint = read_probe_checkpoint(path)
        spec, expdir = checkpoint_spec(checkpoint, args.override, args.tasks_dir, path), path.parent
    else:
        if args.downstream is None:
            raise ValueError("choose a task with -d (see -h for the list), or resume a run with -e EXPDIR")
        spec = spec_from_args(args)
        expdir = experiment_dir(args, spec)
        if (expdir / RESULTS).exists() or any(expdir.glob("*.ckpt")):
            raise ValueError(
                f"{expdir} already holds a run; resume it with -e {expdir}, pick another name with -n, "
                "or delete the folder"
            )
    context = run_context(args)
    try:
        runner = Runner(spec, context, expdir, args.tasks_dir)
        return runner.train(checkpoint)
    finally:
        cleanup_distributed(context)


def evaluate(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    if args.past_exp is None:
        raise ValueError("evaluate needs the experiment to evaluate: -e EXPDIR (its best.ckpt) or -e FILE.ckpt")
    path = locate_checkpoint(args.past_exp, prefer_best=True)
    checkpoint = read_probe_checkpoint(path)
    spec = checkpoint_spec(checkpoint, args.override, args.tasks_dir, path)
    context = run_context(args)
    try:
        runner = Runner(spec, context, path.parent, args.tasks_dir)
        runner.load_weights(checkpoint)
        metrics = {split: runner.evaluate(split) for split in (args.split or ["dev", "test"])}
    finally:
        cleanup_distributed(context)
    if context.is_main:
        for split, values in metrics.items():
            print(f"{split}: " + ", ".join(f"{name} {value:.4f}" for name, value in values.items()))
        write_json({"checkpoint": str(path), "step": checkpoint["step"], **metrics}, path.parent / EVALUATION)
    return metrics


def inference(args: argparse.Namespace) -> list[list[str]]:
    if args.past_exp is None or not args.inputs:
        raise ValueError("inference needs a trained probe and audio files: -e EXPDIR -i FILE [FILE ...]")
    checkpoint = read_probe_checkpoint(locate_checkpoint(args.past_exp, prefer_best=True))
    spec, model = load_probe(checkpoint, run_context(args).device, args.tasks_dir)
    predictions = predict_files(model, args.inputs)
    text = format_predictions(model, spec, args.inputs, predictions)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return predictions


MODES = {"train": train, "evaluate": evaluate, "inference": inference}
