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
import json
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional, Sequence

from upstream import Upstream, get_entry
from utility.checkpoint_keeper import check_resumes_the_newest, experiment_of
from utility.config import RESTORED_FROM_CHECKPOINT, absolute_paths, apply_overrides, check_resume_unchanged
from utility.experiment_lock import ExperimentLock
from utility.interrupt import stop_at_step_boundary
from utility.typed_config import check_argument, check_choice, check_text_list
from utility.process_group import DistributedContext, cleanup_distributed, init_distributed

from .base import SPLITS
from .discovery import TASKS_DIR, load_task
from .probe_checkpoint import RunSpec, read_located_checkpoint
from .runner import RESULTS, Runner, write_json
from .settings import (
    PATH_SETTINGS,
    RENAMED,
    RESUME_FIXED,
    RESUME_RESTORED,
    complete_task_config,
    load_task_config,
    runner_sections,
)
from .upstream_file import RECORD_KEY, check_upstream_file, moved_upstream

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
    check_argument("new_spec", "fine_tune", fine_tune, bool, "True")
    check_argument("new_spec", "seed", seed, int, "1337")
    if layer is not None:
        check_argument("new_spec", "layer", layer, int, "-1")
    check_text_list("new_spec", "overrides", overrides, '["runner.total_steps=200"]')
    if upstream is None and upstream_ckpt is None:
        raise ValueError("give an upstream name with -u (see -h for the list) or an upstream checkpoint with -k")
    if upstream is not None:
        get_entry(upstream)  # an unknown name raises here, listing the available ones
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    config = absolute_paths(load_task_config(load_task(task, tasks_dir), config_file, list(overrides)), PATH_SETTINGS, "settings")
    runner_sections(config)
    return RunSpec(task, upstream, upstream_ckpt, layer, fine_tune, seed, config)


def stored_spec(checkpoint: dict[str, Any], overrides: Sequence[str], tasks_dir: Path, source: Path) -> RunSpec:
    """The spec a probe checkpoint was trained with (its config brought up to date), with
    ``overrides`` applied."""
    spec = RunSpec.from_dict(checkpoint["run"])
    config = complete_task_config(load_task(spec.task, tasks_dir), spec.config, str(source))
    spec.config = absolute_paths(apply_overrides(config, list(overrides), RENAMED), PATH_SETTINGS, str(source), stored=True)
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
    check_text_list("resume", "overrides", overrides, '["runner.total_steps=2000"]')
    context = init_distributed(device)
    try:
        with _owned(experiment_of(path), context):
            source, checkpoint = read_located_checkpoint(
                path, prefer_best=False, skip_damaged=skip_damaged, set_aside=context.is_main
            )
            check_resumes_the_newest(path, int(checkpoint["step"]))
            upstream_file = check_upstream_file(checkpoint, source, allow_upstream_change)
            spec = stored_spec(checkpoint, overrides, tasks_dir, source)
            # Settings that fix the data, its split or the seed cannot change mid-run, however given.
            stored = stored_spec(checkpoint, (), tasks_dir, source).config
            check_resume_unchanged(stored, spec.config, RESUME_FIXED, str(source))
            check_resume_unchanged(stored, spec.config, RESUME_RESTORED, str(source), RESTORED_FROM_CHECKPOINT)
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
    upstream_ckpt: Optional[str] = None,
    allow_upstream_change: bool = False,
    tasks_dir: Path = TASKS_DIR,
    device: str = "auto",
) -> dict[str, dict[str, float]]:
    """Score a trained probe (a folder's best.ckpt, or a given checkpoint file) on ``splits``;
    the scores are also written to the folder's evaluation.json. ``upstream_ckpt``: where the
    upstream file the probe was trained on is now (moved or copied; its content is checked)."""
    check_text_list("evaluate", "splits", splits, '["test"]')
    for split in splits:
        check_choice("evaluate: each of splits", split, SPLITS)
    check_text_list("evaluate", "overrides", overrides, '["data.root=/data/LibriSpeech"]')
    source, checkpoint = read_located_checkpoint(path, prefer_best=True)
    moved_upstream(checkpoint, upstream_ckpt)
    upstream_file = check_upstream_file(checkpoint, source, allow_upstream_change)
    spec = stored_spec(checkpoint, overrides, tasks_dir, source)
    context = init_distributed(device)
    try:
        runner = Runner(spec, context, source.parent, tasks_dir)
        runner.load_weights(checkpoint)
        metrics = {split: runner.evaluate(split) for split in splits}
        if context.is_main:
            scored = {"checkpoint": str(source), "step": checkpoint["step"], "data": spec.config["data"]}
            target = source.parent / EVALUATION
            write_json(_with_earlier_splits(scored, metrics, upstream_file, target), target)
    finally:
        cleanup_distributed(context)
    return metrics


def _with_earlier_splits(
    scored: dict[str, Any], metrics: dict[str, dict[str, float]], upstream_file: Optional[dict[str, Any]], path: Path
) -> dict[str, Any]:
    """evaluation.json's content: what was scored (checkpoint, step, data), the scores of this
    evaluation, and those of splits scored earlier of the same checkpoint on the same data and
    upstream file (``-t test`` after ``-t dev`` keeps dev); earlier scores of anything else are dropped."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        earlier = {}  # none yet, or unreadable: replaced
    same = isinstance(earlier, dict) and all(earlier.get(key) == value for key, value in scored.items())
    same = same and earlier.get(RECORD_KEY) == upstream_file
    kept = {split: earlier[split] for split in SPLITS if same and split in earlier and split not in metrics}
    return {**scored, **kept, **metrics, RECORD_KEY: upstream_file}


def _train(runner: Runner, checkpoint: Optional[dict[str, Any]]) -> dict[str, Any]:
    with stop_at_step_boundary():
        return runner.train(checkpoint)


def _owned(folder: Path, context: DistributedContext) -> ContextManager[Any]:
    """The folder's lock, held by the main process (the other processes write nothing there)."""
    return ExperimentLock(folder) if context.is_main else contextlib.nullcontext()
