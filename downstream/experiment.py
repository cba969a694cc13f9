"""The probing experiment API: what ``run_downstream.py`` and the analysis commands call.

    from downstream.experiment import new_spec, train, resume, evaluate

    spec = new_spec("speaker_utterance", upstream="fbank", overrides=["runner.total_steps=200"])
    results = train(spec, "result/downstream/spk_fbank")      # the content of results.json
    results = resume("result/downstream/spk_fbank")           # continue a stopped run
    scores = evaluate("result/downstream/spk_fbank")          # {"dev": {...}, "test": {...}}

Training (new or resumed) owns its experiment folder for its duration (``ExperimentLock``: a
second run on the same folder is refused, naming the owner), reads checkpoints the same way
(a damaged newest checkpoint is named together with the newest intact one; ``skip_damaged``
uses that one), and turns Ctrl-C into a checkpoint at the next step boundary
(``TrainingInterrupted`` says how to continue).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional, Sequence

from upstream import Upstream, get_entry
from utility.checkpoint_keeper import experiment_of
from utility.config import apply_overrides, check_resume_unchanged
from utility.experiment_lock import ExperimentLock
from utility.interrupt import stop_at_step_boundary
from utility.process_group import DistributedContext, cleanup_distributed, init_distributed

from .discovery import TASKS_DIR, load_task
from .probe_checkpoint import RunSpec, read_located_checkpoint
from .runner import RESULTS, Runner, write_json
from .settings import RENAMED, RESUME_FIXED, complete_task_config, load_task_config, runner_sections
from .upstream_file import RECORD_KEY, check_upstream_file

EVALUATION = "evaluation.json"


def new_spec(
    task: str,
    upstream: Optional[str] = None,
    upstream_ckpt: Optional[str] = None,
    *,
    layer: Optional[int] = None,
    fine_tune: bool = False,
    seed: int = 1337,
    config_file: Optional[str | Path] = None,
    overrides: Sequence[str] = (),
    tasks_dir: Path = TASKS_DIR,
) -> RunSpec:
    """A new run's spec: the task's config.yaml (or ``config_file``) with ``overrides``
    (``KEY=VALUE``). Values the runner cannot use are refused here, before any file is written."""
    if upstream is None and upstream_ckpt is None:
        raise ValueError("give an upstream name with -u (see -h for the list) or an upstream checkpoint with -k")
    if upstream is not None:
        get_entry(upstream)  # an unknown name raises here, listing the available ones
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    config = load_task_config(load_task(task, tasks_dir), config_file, list(overrides))
    runner_sections(config)
    return RunSpec(task, upstream, upstream_ckpt, layer, fine_tune, seed, config)


def stored_spec(checkpoint: dict[str, Any], overrides: Sequence[str], tasks_dir: Path, source: Path) -> RunSpec:
    """The spec a probe checkpoint was trained with (its config brought up to date), with
    ``overrides`` applied."""
    spec = RunSpec.from_dict(checkpoint["run"])
    config = complete_task_config(load_task(spec.task, tasks_dir), spec.config, str(source))
    spec.config = apply_overrides(config, list(overrides), RENAMED)
    runner_sections(spec.config)
    return spec


def holds_run(expdir: str | Path) -> bool:
    """Whether a folder already holds a probe run (results or checkpoints)."""
    expdir = Path(expdir)
    return (expdir / RESULTS).exists() or any(expdir.glob("*.ckpt"))


def train(
    spec: RunSpec,
    expdir: str | Path,
    *,
    tasks_dir: Path = TASKS_DIR,
    device: str = "auto",
    upstream: Optional[Upstream] = None,
) -> dict[str, Any]:
    """Train a new probe in ``expdir`` (refused when the folder already holds a run) and
    evaluate test with the best-dev weights. Returns the results (also in results.json).

    ``upstream``: an already built upstream (e.g. shared by several probes); None builds the
    one ``spec`` names.
    """
    expdir = Path(expdir)
    context = init_distributed(device)
    try:
        with _owned(expdir, context):
            if holds_run(expdir):
                raise ValueError(
                    f"{expdir} already holds a run; resume it with -e {expdir} alone (it keeps its own settings), "
                    "pick another name with -n, or delete the folder"
                )
            return _train(Runner(spec, context, expdir, tasks_dir, upstream=upstream), None)
    finally:
        cleanup_distributed(context)


def resume(
    path: str | Path,
    *,
    overrides: Sequence[str] = (),
    skip_damaged: bool = False,
    allow_upstream_change: bool = False,
    tasks_dir: Path = TASKS_DIR,
    device: str = "auto",
    upstream: Optional[Upstream] = None,
    check: Optional[Callable[[RunSpec, Path], None]] = None,
) -> dict[str, Any]:
    """Continue the run of an experiment folder (its newest intact step checkpoint) or of a
    given checkpoint file, with its saved settings plus ``overrides``; a finished run returns
    its results. ``check(spec, checkpoint_path)`` may refuse the stored run before anything is
    written (the analysis commands compare it with the cell they expect)."""
    context = init_distributed(device)
    try:
        with _owned(experiment_of(path), context):
            source, checkpoint = read_located_checkpoint(path, prefer_best=False, skip_damaged=skip_damaged,
                                                         set_aside=context.is_main)
            upstream_file = check_upstream_file(checkpoint, source, allow_upstream_change)
            spec = stored_spec(checkpoint, overrides, tasks_dir, source)
            # Settings that fix the data, its split or the seed cannot change mid-run, however given.
            check_resume_unchanged(stored_spec(checkpoint, (), tasks_dir, source).config, spec.config, RESUME_FIXED, str(source))
            if check is not None:
                check(spec, source)
            runner = Runner(spec, context, source.parent, tasks_dir, upstream=upstream)
            runner.upstream_file = upstream_file  # says so if allow_upstream_change accepted a new file
            return _train(runner, checkpoint)
    finally:
        cleanup_distributed(context)


def evaluate(
    path: str | Path,
    *,
    splits: Sequence[str] = ("dev", "test"),
    overrides: Sequence[str] = (),
    allow_upstream_change: bool = False,
    tasks_dir: Path = TASKS_DIR,
    device: str = "auto",
) -> dict[str, dict[str, float]]:
    """Score a trained probe (a folder's best.ckpt, or a given checkpoint file) on ``splits``;
    the scores are also written to the folder's evaluation.json."""
    source, checkpoint = read_located_checkpoint(path, prefer_best=True)
    upstream_file = check_upstream_file(checkpoint, source, allow_upstream_change)
    spec = stored_spec(checkpoint, overrides, tasks_dir, source)
    context = init_distributed(device)
    try:
        runner = Runner(spec, context, source.parent, tasks_dir)
        runner.load_weights(checkpoint)
        metrics = {split: runner.evaluate(split) for split in splits}
        if context.is_main:
            summary = {"checkpoint": str(source), "step": checkpoint["step"], **metrics, RECORD_KEY: upstream_file}
            write_json(summary, source.parent / EVALUATION)
    finally:
        cleanup_distributed(context)
    return metrics


def _train(runner: Runner, checkpoint: Optional[dict[str, Any]]) -> dict[str, Any]:
    with stop_at_step_boundary():
        return runner.train(checkpoint)


def _owned(folder: Path, context: DistributedContext) -> ContextManager[Any]:
    """The folder's lock, held by the main process (the other processes write nothing there)."""
    return ExperimentLock(folder) if context.is_main else contextlib.nullcontext()
