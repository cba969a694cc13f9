"""The pretraining loop: AdamW with warm-up and linear decay, gradient accumulation and clipping,
AMP on GPU, DDP across processes, TensorBoard logs and resumable checkpoints.

One "step" is one optimizer update over ``data.batch_size`` utterances, whatever the number of
processes and accumulation steps: the loss is the sum of absolute errors over every masked
position of the whole batch divided by their global count, so the gradient does not depend on
how the batch is split.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
from tensorboardX import SummaryWriter
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from upstream import Upstream, upstream_checkpoint

from .data import (
    DROPOUT_STREAM,
    BatchMaker,
    MaskedBatch,
    TrainingBatches,
    derived_seed,
    dev_batches,
    select_utterances,
    training_loader,
)
from .baselines import trivial_losses
from .masking import masked_l1
from .model import MaskedAcousticModel, recompute_layers_in_backward
from .settings import PretrainSettings
from .state import SECTION
from .visualize import reconstruction_figure
from utility.checkpoint_keeper import CheckpointKeeper
from utility.cpu_features import cpu_bf16_choice
from utility.precision import mixed_precision
from utility.process_group import DistributedContext
from utility.schedule import linear_warmup_decay
from utility.update_step import LOG_DIR, UpdateStep
from utility.interrupt import TrainingInterrupted, stop_requested
from utility.randomness import capture_rng_state, restore_rng_state

log = logging.getLogger("pretrain")


@dataclass
class PretrainOutcome:
    """What a call to :meth:`Pretrainer.run` leaves behind."""

    experiment: Path
    step: int
    finished: bool
    checkpoint: Optional[Path] = None
    upstream: Optional[Upstream] = None
    dev_history: list[tuple[int, float]] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    skipped_nonfinite: int = 0
    dev_baselines: dict[str, float] = field(default_factory=dict)  # trivial predictors' held-out masked L1


@dataclass
class UpdateStats:
    loss: float
    grad_norm: float
    frames: int
    unreadable: list[str]


class Pretrainer:
    """Builds the model, optimizer, schedule and data of a run (or restores them from a
    checkpoint dict) and trains with :meth:`run`. Only the main process evaluates, logs and
    writes checkpoints."""

    def __init__(
        self,
        settings: PretrainSettings,
        experiment: Path,
        context: DistributedContext,
        resume: Optional[dict[str, Any]] = None,
    ):
        self.settings = settings
        self.experiment = experiment
        self.context = context
        self.device = context.device
        runner = settings.runner

        torch.manual_seed(runner.seed)  # initial weights
        self.upstream = Upstream(settings.model)
        self.model = MaskedAcousticModel(self.upstream.encoder, settings.model.frontend.target_dim).to(self.device)
        if runner.activation_checkpointing:
            recompute_layers_in_backward(self.model.encoder)
        self.network = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if context.is_distributed
            else self.model
        )
        optimizer = torch.optim.AdamW(
            self._parameter_groups(),
            lr=settings.optimizer.lr,
            betas=tuple(settings.optimizer.betas),
            eps=settings.optimizer.eps,
        )
        cpu_bf16 = False
        self.precision_note: Optional[str] = None  # the CPU precision chosen and why, for the log
        if self.device.type == "cpu" and runner.amp:
            cpu_bf16, self.precision_note = cpu_bf16_choice(runner.cpu_bf16)
        self.precision = mixed_precision(self.device, enabled=runner.amp, cpu_bf16=cpu_bf16)
        self.update = UpdateStep(
            self.network,
            optimizer,
            linear_warmup_decay(optimizer, settings.warmup_steps, runner.total_steps),
            self.precision,
            runner.gradient_clipping,
        )
        self.keeper = CheckpointKeeper(experiment, max_keep=runner.max_keep)
        if context.is_main:
            self.keeper.remove_partial_files()
        self.step = 0
        # train_seconds: wall time of the updates (with their evaluations and checkpoints), summed
        # over every session of the run, so a resumed run still states what it cost.
        self.counters = {"skipped_nonfinite": 0, "unreadable": 0, "frames": 0, "train_seconds": 0.0}
        if resume is not None:
            self._load(resume)

        min_samples = BatchMaker(settings).min_samples()
        self.train_set = TrainingBatches(
            select_utterances(settings, settings.corpus.subsets, min_samples),
            settings,
            rank=context.rank,
            world_size=context.world_size,
        )
        self.dev_set: list[MaskedBatch] = []
        if settings.corpus.dev_subsets and context.is_main:
            dev = select_utterances(settings, settings.corpus.dev_subsets, min_samples)
            micro = max(1, settings.data.batch_size // (context.world_size * runner.gradient_accumulate_steps))
            self.dev_set = dev_batches(dev[: settings.corpus.dev_utterances], settings, micro)
        self.writer = SummaryWriter(str(experiment / LOG_DIR)) if context.is_main else None
        # What the model must beat on the held-out set, at the same masks (pretrain/baselines.py).
        self.dev_baselines = trivial_losses(self.dev_set, settings.downsample_rate) if self.dev_set else {}

    def calibrate_total_steps(self, max_minutes: float, probe_steps: int = 3) -> int:
        """Lay the schedule out over a wall-clock budget: time ``probe_steps`` forward/backward
        passes (no update) and one held-out evaluation, then set ``runner.total_steps`` to what
        fits in ``max_minutes`` and rebuild the warm-up/decay schedule over it.

        Only a new run calls this; the total is stored with the settings, so a resumed run
        continues the same schedule exactly. The probing passes leave no trace: gradients are
        cleared and the random generators restored.
        """
        runner = self.settings.runner
        loader = iter(training_loader(self.train_set, 0, probe_steps, pin_memory=False))
        with torch.random.fork_rng(devices=[]):
            started = time.perf_counter()
            for _ in range(probe_steps * runner.gradient_accumulate_steps):
                total, _ = self._forward(next(loader).to(self.device))
                total.backward()
            step_seconds = (time.perf_counter() - started) / probe_steps
            self.update.optimizer.zero_grad(set_to_none=True)
            started = time.perf_counter()
            if self.dev_set:
                self.evaluate()
            eval_seconds = time.perf_counter() - started
        # budget = steps * step_seconds + (steps / save_step + 1) * eval_seconds
        budget = max_minutes * 60 - eval_seconds
        steps = max(1, int(budget / (step_seconds + eval_seconds / runner.save_step)))
        runner.total_steps = steps
        self.update.scheduler = linear_warmup_decay(self.update.optimizer, self.settings.warmup_steps, steps)
        log.info(
            "runner.max_minutes=%g: %.2f s per step, %.1f s per held-out evaluation -> runner.total_steps=%d",
            max_minutes,
            step_seconds,
            eval_seconds,
            steps,
        )
        return steps

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """Weight decay on matrices only; biases and LayerNorm weights are left alone (BERT)."""
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        return [
            {"params": decay, "weight_decay": self.settings.optimizer.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    # -----------------------------------------------------------------------------------------
    # The loop

    def run(self, stop_at_step: Optional[int] = None) -> PretrainOutcome:
        """Train until ``runner.total_steps`` (or ``stop_at_step``), checkpointing on the way."""
        runner = self.settings.runner
        stop = min(runner.total_steps, stop_at_step) if stop_at_step is not None else runner.total_steps
        outcome = PretrainOutcome(
            experiment=self.experiment,
            step=self.step,
            finished=False,
            upstream=self.upstream,
            dev_baselines=dict(self.dev_baselines),
        )
        if self.step == 0 and self.dev_set:
            log.info(
                "held-out masked L1 of trivial predictors: %s",
                ", ".join(f"{name} {value:.4f}" for name, value in self.dev_baselines.items()),
            )
            outcome.dev_history.append((0, self._log_dev_loss()))
        loader = iter(training_loader(self.train_set, self.step, stop, pin_memory=self.device.type == "cuda"))
        progress = tqdm(
            total=stop,
            initial=self.step,
            desc=f"pretrain {self.settings.upstream}",
            unit="step",
            disable=not self.context.is_main,
            dynamic_ncols=True,
        )
        window: list[float] = []
        started = time.perf_counter()
        while self.step < stop:
            micro_batches = [next(loader) for _ in range(runner.gradient_accumulate_steps)]
            show = self.context.is_main and runner.image_step and (self.step + 1) % runner.image_step == 0
            stats = self._update(micro_batches, keep_picture=bool(show))
            elapsed, started = time.perf_counter() - started, time.perf_counter()
            if "train_seconds" in self.counters:  # absent: a run begun before it was counted
                self.counters["train_seconds"] += elapsed
            self.step += 1
            outcome.train_losses.append(stats.loss)
            window.append(stats.loss)
            progress.update(1)
            progress.set_postfix(
                loss=f"{stats.loss:.4f}", lr=f"{self.update.scheduler.get_last_lr()[0]:.2e}", fps=f"{stats.frames / elapsed:.0f}"
            )
            self._record(stats, elapsed, window)
            scheduled = self.step % runner.save_step == 0 or self.step == stop
            interrupted = self.step < stop and stop_requested(self.context)
            if scheduled or interrupted:
                metric = self._log_dev_loss() if self.dev_set and scheduled else None
                if metric is not None:
                    outcome.dev_history.append((self.step, metric))
                outcome.checkpoint = self._save(metric)
            if interrupted:
                progress.close()
                self._stop_interrupted(outcome.checkpoint)
            started = time.perf_counter()  # evaluation and saving are not training throughput
        progress.close()
        self.context.barrier()  # every process waits for the last checkpoint
        outcome.step, outcome.finished = self.step, self.step >= runner.total_steps
        outcome.skipped_nonfinite = self.counters["skipped_nonfinite"]
        if self.writer is not None:
            self.writer.close()
        return outcome

    def _stop_interrupted(self, checkpoint: Optional[Path]) -> None:
        """Ctrl-C: the checkpoint of this step is written; close the logs and say how to go on."""
        self.context.barrier()
        if self.writer is not None:
            self.writer.close()
        raise TrainingInterrupted(
            f"interrupted at step {self.step}: saved {checkpoint}; continue with: python run_pretrain.py -e {self.experiment}"
        )

    def _update(self, micro_batches: list[MaskedBatch], keep_picture: bool) -> UpdateStats:
        """One optimizer update over this process's micro-batches."""
        runner, rate = self.settings.runner, self.settings.downsample_rate
        # Dropout draws from the global generator: reseed it per update and rank so that it, too,
        # depends only on the step (exact resume).
        torch.manual_seed(derived_seed(runner.seed, DROPOUT_STREAM, self.step, self.context.rank))
        target_dim = self.settings.model.frontend.target_dim
        # Global count of target values under the mask, and of frames, known before any forward.
        totals = torch.tensor(
            [
                [float(b.selected.sum()) * target_dim * rate, float(b.lengths.sum()), float(len(b.unreadable))]
                for b in micro_batches
            ]
        ).sum(0)
        totals = self._all_reduce(totals)
        count = max(float(totals[0]), 1.0)
        self.network.train()
        error_sum = torch.zeros((), device=self.device)
        for index, batch in enumerate(micro_batches):
            with self.update.micro_batch(last=index == len(micro_batches) - 1):
                batch = batch.to(self.device)
                total, prediction = self._forward(batch)
                # DDP averages gradients over processes: scale so the result is total / count.
                self.update.backward(total * (self.context.world_size / count))
            error_sum += total.detach()
            if keep_picture and index == 0 and len(batch):
                self._picture(batch, prediction)
        grad_norm = self.update.step()
        if not math.isfinite(grad_norm):
            log.warning("step %d: non-finite gradient norm (%s), update skipped", self.step + 1, grad_norm)
        self.counters["skipped_nonfinite"] = self.update.skipped
        unreadable = [name for b in micro_batches for name in b.unreadable]
        self.counters["unreadable"] += int(totals[2])
        self.counters["frames"] += int(totals[1])
        loss = float(self._all_reduce(error_sum.detach().reshape(1).cpu())[0]) / count
        return UpdateStats(loss=loss, grad_norm=float(grad_norm), frames=int(totals[1]), unreadable=unreadable)

    def _forward(self, batch: MaskedBatch) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Sum of absolute errors on the masked positions, and the predictions."""
        rate = self.settings.downsample_rate
        if not len(batch):
            # Every file of this share was unreadable: run a zero-weighted dummy forward so that
            # DDP's gradient exchange still sees this process.
            dummy = torch.zeros(1, rate, self.settings.model.frontend.feature_dim, device=self.device)
            with self.precision.autocast():
                prediction = self.network(dummy, torch.tensor([rate], device=self.device))
            return prediction.float().sum() * 0.0, None
        with self.precision.autocast():
            prediction = self.network(batch.inputs, batch.lengths)
        total, _ = masked_l1(prediction, batch.targets, batch.lengths, batch.selected, rate)
        return total, prediction

    def _all_reduce(self, values: torch.Tensor) -> torch.Tensor:
        if not self.context.is_distributed:
            return values
        # gloo reduces CPU tensors, NCCL GPU tensors.
        reduced = values.to(self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(reduced)
        return reduced.cpu()

    # -----------------------------------------------------------------------------------------
    # Evaluation, logging, checkpoints

    @torch.no_grad()
    def evaluate(self) -> float:
        """Masked L1 on the held-out set (fixed masks), dropout off."""
        self.model.eval()
        error, count = 0.0, 0.0
        for batch in self.dev_set:
            batch = batch.to(self.device)
            with self.precision.autocast():
                prediction = self.model(batch.inputs, batch.lengths)
            total, elements = masked_l1(prediction, batch.targets, batch.lengths, batch.selected, self.settings.downsample_rate)
            error, count = error + float(total), count + float(elements)
        self.model.train()
        return error / max(count, 1.0)

    def _log_dev_loss(self) -> float:
        value = self.evaluate()
        best_name, best = min(self.dev_baselines.items(), key=lambda item: item[1])
        verdict = "beaten" if value < best else "not yet beaten"
        log.info(
            "step %d: held-out masked L1 %.4f (best trivial predictor: %s %.4f, %s)", self.step, value, best_name, best, verdict
        )
        for name, baseline in self.dev_baselines.items():
            key = f"first_beat_{name}"
            if value < baseline and key not in self.counters:
                # The counters travel in every checkpoint, so a resumed run reports each crossing once.
                self.counters[key] = self.step
                log.info(
                    "step %d: held-out masked L1 %.4f falls below the %s predictor (%.4f) for the first time",
                    self.step,
                    value,
                    name,
                    baseline,
                )
        self.writer.add_scalar("dev/masked_l1", value, self.step)
        for name, baseline in self.dev_baselines.items():
            self.writer.add_scalar(f"dev/trivial_{name}", baseline, self.step)
        return value

    def _record(self, stats: UpdateStats, elapsed: float, window: list[float]) -> None:
        for name in stats.unreadable:
            log.warning("step %d: skipped unreadable audio file %s", self.step, name)
        if self.writer is None or self.step % self.settings.runner.log_step:
            return
        self.writer.add_scalar("train/loss", sum(window) / len(window), self.step)
        self.writer.add_scalar("train/lr", self.update.scheduler.get_last_lr()[0], self.step)
        self.writer.add_scalar("train/grad_norm", stats.grad_norm, self.step)
        self.writer.add_scalar("train/frames_per_second", stats.frames / elapsed, self.step)
        self.writer.add_scalar("train/skipped_nonfinite", self.counters["skipped_nonfinite"], self.step)
        window.clear()

    def _picture(self, batch: MaskedBatch, prediction: torch.Tensor) -> None:
        length = int(batch.lengths[0])
        stacked = length // self.settings.downsample_rate
        figure = reconstruction_figure(
            batch.clean_inputs[0, :length],
            batch.inputs[0, :length],
            prediction[0, :stacked],
            batch.targets[0, :length],
            self.settings.downsample_rate,
        )
        self.writer.add_figure("reconstruction", figure, self.step + 1)

    def _save(self, metric: Optional[float]) -> Optional[Path]:
        if not self.context.is_main:
            return None
        finished = self.step >= self.settings.runner.total_steps
        payload = upstream_checkpoint(
            self.upstream,
            self.settings.upstream,
            metadata={
                "step": self.step,
                "objective": "masked acoustic modelling",
                "dev_masked_l1": metric,
                "dev_trivial_masked_l1": dict(self.dev_baselines),
                "best_chosen_by": self._best_chosen_by(),
            },
        )
        payload["head"] = {k: v.detach().cpu() for k, v in self.model.head.state_dict().items()}
        payload[SECTION] = {
            "settings": self.settings.to_dict(),
            "step": self.step,
            "finished": finished,
            **self.update.state_dict(),
            "rng": capture_rng_state(),
            "counters": dict(self.counters),
        }
        path = self.keeper.save(payload, self.step, metric)
        if not self.dev_set:  # nothing to choose by: best.ckpt is the newest checkpoint
            self.keeper.publish_best(path, payload)
        log.info("step %d: saved %s", self.step, path)
        return path

    def _best_chosen_by(self) -> str:
        """How best.ckpt is chosen, as its metadata says."""
        if self.dev_set:
            return "lowest held-out masked L1"
        return "none: no held-out set (corpus.dev_subsets or corpus.dev_utterances), so best.ckpt is the newest checkpoint"

    def _load(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint[SECTION]
        try:
            self.model.encoder.load_state_dict(checkpoint["upstream"]["state_dict"], strict=True)
            self.model.head.load_state_dict(checkpoint["head"], strict=True)
        except RuntimeError as error:
            raise ValueError(f"the checkpoint does not fit the model of its own settings: {error}") from error
        self.update.load_state_dict(state)
        restore_rng_state(state["rng"])
        self.counters.update(state["counters"])
        if "train_seconds" not in state["counters"]:
            # A run begun before its wall time was counted: what it cost so far is unknown, and a
            # count of this session alone would pass for the whole.
            del self.counters["train_seconds"]
        self.update.skipped = int(self.counters["skipped_nonfinite"])
        self.step = int(state["step"])
        self.keeper.load_state_dict(checkpoint.get(CheckpointKeeper.STATE_KEY, {}))
