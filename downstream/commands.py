"""What each ``run_downstream.py`` mode does, from parsed command-line arguments."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

from upstream import get_entry
from utility.cli import check_output_is_not_an_input
from utility.config import apply_overrides, check_resume_unchanged
from utility.experiment_lock import ExperimentLock
from utility.interrupt import stop_at_step_boundary
from utility.training import DistributedContext, cleanup_distributed, experiment_of, init_distributed

from .discovery import load_task
from .inference import format_predictions, load_probe, predict_files
from .probe_checkpoint import RunSpec, read_located_checkpoint
from .runner import RESULTS, Runner, write_json
from .settings import RENAMED, RESUME_FIXED, complete_task_config, load_task_config, runner_sections
from .upstream_file import RECORD_KEY, check_upstream_file

DEFAULT_ROOT = Path("result") / "downstream"
EVALUATION = "evaluation.json"
DEFAULT_SEED = 1337  # --seed: weights, batches and the train_proportion draw


def experiment_dir(args: argparse.Namespace, spec: RunSpec) -> Path:
    if args.expdir is not None:
        return Path(args.expdir)
    return DEFAULT_ROOT / (args.expname or f"{spec.task}_{spec.upstream_label}")


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    if args.upstream is None and args.upstream_ckpt is None:
        raise ValueError("give an upstream name with -u (see -h for the list) or an upstream checkpoint with -k")
    if args.upstream is not None:
        get_entry(args.upstream)  # an unknown name raises here, listing the available ones
    seed = DEFAULT_SEED if args.seed is None else args.seed
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    task = load_task(args.downstream, args.tasks_dir)
    config = load_task_config(task, args.config, args.override)
    runner_sections(config)  # values the runner cannot use are refused now, before any file is written
    return RunSpec(
        task=args.downstream,
        upstream=args.upstream,
        upstream_ckpt=args.upstream_ckpt,
        layer=args.layer,
        fine_tune=args.finetune,
        seed=seed,
        config=config,
    )


def checkpoint_spec(checkpoint: dict[str, Any], overrides: list[str], tasks_dir: Path, source: Path) -> RunSpec:
    """The saved run (its config brought up to date), with command-line overrides applied."""
    spec = RunSpec.from_dict(checkpoint["run"])
    config = complete_task_config(load_task(spec.task, tasks_dir), spec.config, str(source))
    spec.config = apply_overrides(config, overrides, RENAMED)
    runner_sections(spec.config)
    return spec


def read_probe(
    args: argparse.Namespace, prefer_best: bool, set_aside: bool = False
) -> tuple[Path, dict[str, Any], Optional[dict[str, Any]]]:
    """The probe checkpoint ``-e`` names (see ``read_located_checkpoint``), and the record of
    the upstream file it runs on now (a changed file is refused unless --allow-upstream-change)."""
    path, checkpoint = read_located_checkpoint(args.past_exp, prefer_best, args.skip_damaged, set_aside)
    return path, checkpoint, check_upstream_file(checkpoint, path, args.allow_upstream_change)


def run_context(args: argparse.Namespace) -> DistributedContext:
    return init_distributed(args.device)


def train(args: argparse.Namespace) -> dict[str, Any]:
    context = run_context(args)
    lock: Optional[ExperimentLock] = None
    checkpoint: Optional[dict[str, Any]] = None
    try:
        if args.past_exp is not None:
            fixed = [flag for flag, value in (("-u", args.upstream), ("-k", args.upstream_ckpt), ("-d", args.downstream),
                     ("-c", args.config), ("-l", args.layer), ("-f", args.finetune or None), ("--seed", args.seed)) if value is not None]
            if fixed:
                raise ValueError(
                    f"-e resumes a run with its own saved settings; {', '.join(fixed)} cannot change them "
                    "(config values can: -o key=value)"
                )
            expdir = experiment_of(args.past_exp)
            lock = ExperimentLock(expdir).acquire() if context.is_main else None
            path, checkpoint, upstream_file = read_probe(args, prefer_best=False, set_aside=context.is_main)
            spec = checkpoint_spec(checkpoint, args.override, args.tasks_dir, path)
            check_resume_unchanged(checkpoint_spec(checkpoint, [], args.tasks_dir, path).config, spec.config, RESUME_FIXED, str(path))
        else:
            if args.downstream is None:
                raise ValueError("choose a task with -d (see -h for the list), or resume a run with -e EXPDIR")
            spec = spec_from_args(args)
            expdir = experiment_dir(args, spec)
            lock = ExperimentLock(expdir).acquire() if context.is_main else None
            if (expdir / RESULTS).exists() or any(expdir.glob("*.ckpt")):
                raise ValueError(
                    f"{expdir} already holds a run; resume it with -e {expdir}, pick another name with -n, "
                    "or delete the folder"
                )
        runner = Runner(spec, context, expdir, args.tasks_dir)
        if checkpoint is not None:
            runner.upstream_file = upstream_file  # says so if --allow-upstream-change accepted a new file
        with stop_at_step_boundary():
            return runner.train(checkpoint)
    finally:
        if lock is not None:
            lock.release()
        cleanup_distributed(context)


def evaluate(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    if args.past_exp is None:
        raise ValueError("evaluate needs the experiment to evaluate: -e EXPDIR (its best.ckpt) or -e FILE.ckpt")
    path, checkpoint, upstream_file = read_probe(args, prefer_best=True)
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
        summary = {"checkpoint": str(path), "step": checkpoint["step"], **metrics, RECORD_KEY: upstream_file}
        write_json(summary, path.parent / EVALUATION)
    return metrics


def inference(args: argparse.Namespace) -> list[list[str]]:
    """Predictions for every usable input file; the unusable ones are named in one error at the end."""
    if args.past_exp is None or not args.inputs:
        raise ValueError("inference needs a trained probe and audio files: -e EXPDIR -i FILE [FILE ...]")
    path, checkpoint, upstream_file = read_probe(args, prefer_best=True)
    check_output_is_not_an_input(args.output, [*args.inputs, path, checkpoint["run"]["upstream_ckpt"]], "--output")
    spec, model = load_probe(checkpoint, run_context(args).device, args.tasks_dir)
    usable, predictions, problems = predict_files(model, args.inputs)
    notes = []
    if upstream_file is not None and "replaced" in upstream_file:
        notes.append(f"upstream checkpoint {upstream_file['path']} has changed since the probe was trained (--allow-upstream-change)")
    text = format_predictions(model, spec, usable, predictions, notes)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    if problems:
        where = f"in {args.output}" if args.output else "above"
        raise ValueError(
            f"{len(problems)} of {len(args.inputs)} input file(s) could not be used: {'; '.join(problems)} "
            f"(predictions for the other {len(usable)} are {where})"
        )
    return predictions


MODES = {"train": train, "evaluate": evaluate, "inference": inference}
