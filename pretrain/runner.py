"""Starting and resuming pretraining runs: settings, experiment folder, process group, logs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import yaml
from tqdm import tqdm

from utility.config import RESTORED_FROM_CHECKPOINT, absolute_paths, apply_overrides, check_resume_unchanged
from utility.experiment_lock import ExperimentLock
from utility.interrupt import stop_at_step_boundary
from utility.checkpoint_keeper import CheckpointKeeper, check_resumes_the_newest, experiment_of
from utility.process_group import cleanup_distributed, init_distributed
from utility.schedule import linear_warmup_decay_factor

from .corpus_stats import with_corpus_statistics
from .data import BatchMaker, select_utterances
from .settings import PATH_SETTINGS, RENAMED, RESUME_FIXED, RESUME_RESTORED, PretrainSettings, load_settings, stored_settings
from .state import SECTION, read_resume_checkpoint
from .trainer import PretrainOutcome, Pretrainer

RESULT_ROOT = Path("result") / "pretrain"
log = logging.getLogger("pretrain")


class _TqdmHandler(logging.Handler):
    """Log lines printed above the progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


def experiment_folder(name: Optional[str], path: Optional[str | Path]) -> Path:
    """``-p PATH`` as given, or ``result/pretrain/NAME`` for ``-n NAME``."""
    if (name is None) == (path is None):
        raise ValueError("give exactly one of -n NAME (saved under result/pretrain/NAME) or -p EXPDIR")
    return Path(path) if path is not None else RESULT_ROOT / name


def pretrain(
    upstream: Optional[str] = None,
    name: Optional[str] = None,
    experiment: Optional[str | Path] = None,
    config_file: Optional[str | Path] = None,
    overrides: Sequence[str] = (),
    resume: Optional[str | Path] = None,
    seed: Optional[int] = None,
    device: Optional[str] = None,
    stop_at_step: Optional[int] = None,
    skip_damaged: bool = False,
) -> PretrainOutcome:
    """Start a run (``upstream`` + ``name``/``experiment``) or continue one (``resume``).

    ``stop_at_step`` ends this invocation early at that step with a checkpoint (for jobs with
    a time limit); ``-e`` continues it exactly. ``skip_damaged``: resume from the newest intact
    checkpoint of the folder when newer ones are damaged. The folder is locked against a second
    run before anything is written to it; Ctrl-C stops at the next step with a checkpoint.
    """
    if stop_at_step is not None and stop_at_step < 1:
        raise ValueError(f"--stop-at-step must be a step >= 1, got {stop_at_step}")
    context = init_distributed(device)
    handlers: list[logging.Handler] = []
    lock: Optional[ExperimentLock] = None
    try:
        if resume is not None:
            folder = experiment_of(resume)
            lock = ExperimentLock(folder).acquire() if context.is_main else None
            path, checkpoint = read_resume_checkpoint(resume, skip_damaged, set_aside=context.is_main)
            check_resumes_the_newest(resume, int(checkpoint[SECTION]["step"]))
            settings = _resumed_settings(upstream, name, experiment, config_file, overrides, seed, path, checkpoint)
            state = checkpoint[SECTION]
            schedule_note = _schedule_change(checkpoint, settings)
            if state["step"] >= settings.runner.total_steps:
                message = (
                    f"{folder}: this run already finished at step {state['step']} "
                    f"(runner.total_steps={settings.runner.total_steps}); nothing to do"
                )
                if context.is_main:
                    print(message)
                return PretrainOutcome(experiment=folder, step=int(state["step"]), finished=True)
        else:
            if upstream is None:
                raise ValueError("give -u UPSTREAM (e.g. -u aalbert_3L) to start a run, or -e EXPDIR to resume one")
            folder = experiment_folder(name, experiment)
            overrides = [*overrides, *([f"runner.seed={seed}"] if seed is not None else [])]
            settings = load_settings(upstream, config_file, overrides)
            lock = ExperimentLock(folder).acquire() if context.is_main else None
            _refuse_a_used_folder(folder)
            if settings.data.corpus_cmvn:
                utterances = select_utterances(settings, settings.corpus.subsets, BatchMaker(settings).min_samples())
                settings = with_corpus_statistics(settings, utterances)
            checkpoint = None
            schedule_note = None
        # The trainer indexes the corpus first: a missing corpus or unusable audio stops the run
        # before it writes anything.
        calibrate = checkpoint is None and settings.runner.max_minutes > 0
        if calibrate and context.is_distributed:
            raise ValueError(
                "runner.max_minutes needs one process (each would measure its own step time); set runner.total_steps"
            )
        trainer = Pretrainer(settings, folder, context, checkpoint)
        if context.is_main:
            handlers = _attach_log_handlers(folder)
        log.info(
            "%s run in %s: %s, %d process(es) on %s",
            "resumed" if checkpoint else "new",
            folder,
            settings.upstream,
            context.world_size,
            context.device,
        )
        if trainer.precision_note is not None:
            log.info(trainer.precision_note)
        if schedule_note is not None:
            log.warning(schedule_note)
        if calibrate:
            trainer.calibrate_total_steps(settings.runner.max_minutes)
        if context.is_main and checkpoint is None:  # with the total_steps a calibration set
            (folder / "config.yaml").write_text(yaml.safe_dump(settings.to_dict(), sort_keys=False))
        with stop_at_step_boundary():
            outcome = trainer.run(stop_at_step)
        if not outcome.finished:  # --stop-at-step
            log.info("stopped at step %d of %d; continue with -e %s", outcome.step, settings.runner.total_steps, folder)
        return outcome
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
        if lock is not None:
            lock.release()
        cleanup_distributed(context)


def _refuse_a_used_folder(folder: Path) -> None:
    """A new run never writes over an earlier run's checkpoints: step checkpoints are resumed,
    a lone ``best.ckpt`` (the step checkpoints deleted to save disk) cannot be, nor replaced."""
    keeper = CheckpointKeeper(folder)
    if keeper.latest() is not None:
        raise ValueError(f"{folder} already holds checkpoints; resume with -e {folder}, or pick another -n/-p")
    if keeper.best_path.exists():
        raise ValueError(
            f"{folder} holds {keeper.best_path.name} of an earlier run (without its states-*.ckpt it cannot be resumed, "
            "and a new run would overwrite it): pick another -n/-p, or move that folder away to start over in it"
        )


def _resumed_settings(
    upstream: Optional[str],
    name: Optional[str],
    experiment: Optional[str | Path],
    config_file: Optional[str | Path],
    overrides: Sequence[str],
    seed: Optional[int],
    path: Path,
    checkpoint: dict,
) -> PretrainSettings:
    """The stored settings of the checkpoint ``path`` to resume (plus run-setting overrides)."""
    if name is not None or experiment is not None:
        raise ValueError("-e resumes in the checkpoint's own folder; drop -n/-p")
    if config_file is not None:
        raise ValueError("-c cannot be combined with -e: a resumed run keeps its stored settings (change them with -o)")
    stored = checkpoint[SECTION]["settings"]
    if upstream is not None and stored["upstream"] != upstream:
        raise ValueError(
            f"cannot resume {path} as {upstream}: it is a checkpoint of {stored['upstream']}; "
            f"use -u {stored['upstream']} (or leave -u out)"
        )
    model_overrides = [o for o in overrides if o.split("=", 1)[0].startswith("model.")]
    if model_overrides:
        raise ValueError(f"cannot change the model of a run being resumed ({model_overrides}); start a new run")
    overrides = [*overrides, *([f"runner.seed={seed}"] if seed is not None else [])]
    current = absolute_paths(stored_settings(stored, str(path)).to_dict(), PATH_SETTINGS, str(path), stored=True)
    resumed = PretrainSettings.from_dict(
        absolute_paths(apply_overrides(current, overrides, RENAMED), PATH_SETTINGS, "-o"), source=str(path)
    )
    check_resume_unchanged(current, resumed.to_dict(), RESUME_FIXED, str(path))
    check_resume_unchanged(current, resumed.to_dict(), RESUME_RESTORED, str(path), RESTORED_FROM_CHECKPOINT)
    return resumed


def _schedule_change(checkpoint: dict, settings: PretrainSettings) -> Optional[str]:
    """The warning for a resume with another ``runner.total_steps`` (e.g. a finished run taken
    further): warm-up and decay are laid anew over the new length, so the learning rate jumps."""
    stored = stored_settings(checkpoint[SECTION]["settings"], "checkpoint")
    old, new = stored.runner.total_steps, settings.runner.total_steps
    if old == new:
        return None
    step = int(checkpoint[SECTION]["step"])
    before = linear_warmup_decay_factor(step, stored.warmup_steps, old)
    after = linear_warmup_decay_factor(step, settings.warmup_steps, new)
    return (
        f"runner.total_steps changes from {old} to {new}: the learning-rate schedule is laid anew over {new} updates "
        f"(warm-up {settings.warmup_steps} updates, then linear decay to 0), so at step {step} the rate moves from "
        f"{before:.3f} to {after:.3f} of optimizer.lr"
    )


def _attach_log_handlers(folder: Path) -> list[logging.Handler]:
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.FileHandler(folder / "train.log"), _TqdmHandler()]
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handlers
