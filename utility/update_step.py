"""The loop settings and the optimizer update every training runner shares."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch

from .precision import MixedPrecision


LOG_DIR = "log"  # tensorboardX event files, inside the experiment folder


@dataclass
class LoopConfig:
    """The ``runner`` keys every training loop has (s3prl's names). Each runner subclasses it
    with its own defaults.

    One step is one optimizer update; each sees ``gradient_accumulate_steps`` micro-batches.
    """

    total_steps: int = 1000
    gradient_accumulate_steps: int = 1
    gradient_clipping: float = 1.0  # max global gradient norm; 0: no clipping
    log_step: int = 50  # steps between training scalars
    save_step: int = 1000  # steps between step checkpoints (there is always one at the end)
    max_keep: int = 1  # step checkpoints kept besides best.ckpt

    def __post_init__(self) -> None:
        for name in ("total_steps", "gradient_accumulate_steps", "log_step", "save_step", "max_keep"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"runner.{name} must be an integer >= 1, got {value!r}")
        if self.gradient_clipping < 0:
            raise ValueError(f"runner.gradient_clipping must be >= 0 (0: no clipping), got {self.gradient_clipping}")


class UpdateStep:
    """One optimizer update from accumulated micro-batches, the same way in every runner:
    gradients exchanged between DDP processes only on the last micro-batch, AMP loss scaling,
    unscale, clip the global norm, skip (and count) an update whose gradient is not finite,
    step the optimizer and the schedule.

        for index, batch in enumerate(micro_batches):
            with update.micro_batch(last=index == len(micro_batches) - 1):
                update.backward(loss_of(network(batch)))
        grad_norm = update.step()
    """

    def __init__(
        self,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        precision: MixedPrecision,
        gradient_clipping: float,
    ):
        self.network = network
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.precision = precision
        self.gradient_clipping = gradient_clipping
        self.skipped = 0  # updates skipped for a non-finite gradient norm

    def micro_batch(self, last: bool) -> contextlib.AbstractContextManager:
        """Wrap forward and backward of one micro-batch; only the last one synchronises DDP."""
        if last or not isinstance(self.network, torch.nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return self.network.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        self.precision.scaler.scale(loss).backward()

    def step(self) -> float:
        """Finish the update; returns the global gradient norm (before clipping)."""
        scaler = self.precision.scaler
        scaler.unscale_(self.optimizer)
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, self.gradient_clipping or math.inf))
        if math.isfinite(grad_norm):
            scaler.step(self.optimizer)
        else:
            self.skipped += 1
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return grad_norm

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.precision.scaler.load_state_dict(state["scaler"])
