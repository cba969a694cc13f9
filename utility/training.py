"""Pieces every training runner needs: seeding and RNG snapshots, device and process-group
setup, mixed precision, the learning-rate schedule and a checkpoint keeper.

Everything that goes into a checkpoint here is plain data (tensors, lists, numbers, strings),
so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from upstream.checkpoint import save_atomic
from upstream.integrity import DamagedCheckpoint

from . import cpu_features

# ---------------------------------------------------------------------------------------------
# Randomness


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def capture_rng_state() -> dict[str, Any]:
    """Snapshot of every global generator as plain data (tensors, lists, numbers)."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back a snapshot from :func:`capture_rng_state` (CUDA states only if GPUs exist)."""
    torch.set_rng_state(state["torch"].cpu())
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


# ---------------------------------------------------------------------------------------------
# Devices and processes


def resolve_device(arg: Optional[str] = None) -> torch.device:
    """``None``/``"auto"``: the GPU if there is one, else the CPU; otherwise a torch device string
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``) checked against what this machine has."""
    if arg is None or arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(arg)
    except RuntimeError as error:
        raise ValueError(f"--device {arg!r} is not a device; use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {arg!r}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {arg!r}: only {torch.cuda.device_count()} GPU(s) here")
    return device


@dataclass
class DistributedContext:
    """Where this process sits in a (possibly single-process) run.

    ``rank``/``world_size`` are global; ``local_rank`` picks the GPU on a node.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the one process that logs, evaluates and writes checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()


def init_distributed(device_arg: Optional[str] = None) -> DistributedContext:
    """Join the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), or return a single-process context.

    Backend: NCCL when the device is a GPU, gloo on the CPU. Each process gets GPU ``LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_arg)
    if world_size == 1:
        return DistributedContext(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup_distributed(context: DistributedContext) -> None:
    """Leave the process group (a no-op for a single process).

    All processes meet at a barrier first: a process that tears its gloo connections down
    while a peer is still finishing its last collective makes that peer abort (SIGABRT).
    If a peer has already failed, the barrier raises and the group is left all the same
    (torchrun stops the remaining processes of a failed run).
    """
    if context.is_distributed and dist.is_initialized():
        try:
            dist.barrier()
        except RuntimeError:
            pass  # a peer is gone: nothing left to wait for
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# Mixed precision


@dataclass
class MixedPrecision:
    """Autocast settings and the matching gradient scaler.

    bfloat16 needs no loss scaling; float16 does (``scaler`` is then enabled); on the CPU, or
    when disabled, ``autocast()`` is a no-op and ``scaler`` passes gradients through unchanged.
    """

    device_type: str
    dtype: Optional[torch.dtype]
    scaler: torch.amp.GradScaler

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def mixed_precision(device: torch.device, enabled: bool = True, cpu_bf16: bool = False) -> MixedPrecision:
    """bf16 autocast on GPUs that support it, fp16 + GradScaler on older GPUs; on the CPU
    nothing, unless ``cpu_bf16`` asks for bf16 autocast (worth it only where
    ``utility.cpu_features.native_bf16``: there bf16 matrix products run several times faster)."""
    dtype = None
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif enabled and device.type == "cpu" and cpu_bf16:
        if not cpu_features.native_bf16():
            raise ValueError("bfloat16 autocast on this CPU has no fast kernels (needs AVX512-BF16 or AMX); turn it off")
        dtype = torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    return MixedPrecision(device_type=device.type, dtype=dtype, scaler=scaler)


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule


def linear_warmup_decay(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the optimizer's lr over ``warmup_steps`` updates, then linear decay
    towards 0 at ``total_steps``. Call ``scheduler.step()`` after each optimizer update.

    Update s (0-based) uses lr * (s + 1) / warmup_steps during warm-up, so no update is wasted
    at lr 0, and lr * (total_steps - s) / (total_steps - warmup_steps) after it.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------------------------
# The loop settings and the update step both runners share


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


# ---------------------------------------------------------------------------------------------
# Checkpoints


class CheckpointKeeper:
    """Writes ``states-<step>.ckpt`` files atomically, keeps the newest ``max_keep`` of them
    and, separately, ``best.ckpt``: the one with the lowest (or highest) metric so far.

    The keeper's own state (best metric and step) is stored inside every payload it writes
    under ``"checkpoint_keeper"``, so :meth:`load_state_dict` after a resume continues it.
    Folders written before the runners shared this naming hold ``step-<step>.ckpt`` files;
    they are found, resumed from and pruned like the new ones.
    """

    STATE_KEY = "checkpoint_keeper"
    PREFIX = "states"
    LEGACY_PREFIXES = ("step",)

    def __init__(self, directory: str | Path, max_keep: int = 3, higher_is_better: bool = False):
        if max_keep < 1:
            raise ValueError(f"max_keep must be >= 1, got {max_keep}")
        self.directory = Path(directory)
        self.max_keep = max_keep
        self.higher_is_better = higher_is_better
        self.best_metric: Optional[float] = None
        self.best_step: Optional[int] = None
        prefixes = "|".join(re.escape(p) for p in (self.PREFIX, *self.LEGACY_PREFIXES))
        self._pattern = re.compile(rf"^(?:{prefixes})-(\d+)\.ckpt$")

    @property
    def best_path(self) -> Path:
        return self.directory / "best.ckpt"

    def path_for(self, step: int) -> Path:
        return self.directory / f"{self.PREFIX}-{step:08d}.ckpt"

    def step_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of the kept step checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = self._pattern.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def latest(self) -> Optional[Path]:
        """The newest step checkpoint, or None."""
        found = self.step_checkpoints()
        return found[-1][1] if found else None

    def is_better(self, metric: float) -> bool:
        if self.best_metric is None:
            return True
        return metric > self.best_metric if self.higher_is_better else metric < self.best_metric

    def record(self, metric: Optional[float], step: int) -> bool:
        """Note ``metric`` of ``step``; True when it is the best so far. (Processes that do not
        write checkpoints call this to keep the same best step as the one that does.)"""
        improved = metric is not None and self.is_better(metric)
        if improved:
            self.best_metric, self.best_step = float(metric), int(step)
        return improved

    def save(self, payload: dict[str, Any], step: int, metric: Optional[float] = None) -> Path:
        """Write ``payload`` for ``step``; also as ``best.ckpt`` when ``metric`` improves."""
        improved = self.record(metric, step)
        payload[self.STATE_KEY] = self.state_dict()
        path = save_atomic(payload, self.path_for(step))
        if improved:
            self._publish_best(path, payload)
        for _, old in self.step_checkpoints()[: -self.max_keep]:
            old.unlink(missing_ok=True)
        return path

    def _publish_best(self, path: Path, payload: dict[str, Any]) -> None:
        # A hard link shares the bytes just written; the rename keeps the swap atomic.
        temp = self.best_path.with_name(f".{self.best_path.name}.{os.getpid()}.link")
        try:
            temp.unlink(missing_ok=True)
            os.link(path, temp)
            os.replace(temp, self.best_path)
        except OSError:  # file systems without hard links
            temp.unlink(missing_ok=True)
            save_atomic(payload, self.best_path)

    def remove_partial_files(self) -> list[Path]:
        """Delete temporary files left by writes that were killed midway (see save_atomic)."""
        if not self.directory.is_dir():
            return []
        partial = [p for p in self.directory.glob(".*.ckpt.*") if p.suffix in (".tmp", ".link")]
        for path in partial:
            path.unlink(missing_ok=True)
        return partial

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric": self.best_metric, "best_step": self.best_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_metric = state.get("best_metric")
        self.best_step = state.get("best_step")


def experiment_of(path: str | Path) -> Path:
    """The experiment folder ``-e PATH`` continues: the folder itself, or a checkpoint file's folder."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    raise FileNotFoundError(f"-e {path}: no such checkpoint file or experiment folder")


SKIP_DAMAGED_FLAG = "--skip-damaged"
Checkpoint = TypeVar("Checkpoint")


def read_newest_intact(
    candidates: Sequence[Path], read: Callable[[Path], Checkpoint], skip_damaged: bool, set_aside: bool = False
) -> tuple[Path, Checkpoint]:
    """Read the first of ``candidates`` (newest first) that is intact.

    When the newest is damaged (:class:`DamagedCheckpoint`), the error names it and offers the
    newest intact one; with ``skip_damaged`` that one is used instead, with a warning naming
    the damaged ones, which ``set_aside`` renames to ``*.damaged`` (a resumed run would
    otherwise keep them as its newest checkpoints and prune the good ones).
    """
    damaged: list[tuple[Path, DamagedCheckpoint]] = []
    for path in candidates:
        try:
            checkpoint = read(path)
        except DamagedCheckpoint as error:
            damaged.append((path, error))
            continue
        except FileNotFoundError:
            continue  # set aside a moment ago by another process of the same run
        if damaged and not skip_damaged:
            raise DamagedCheckpoint(
                f"{damaged[0][1]}. The newest intact checkpoint is {path}: add {SKIP_DAMAGED_FLAG} to use it"
            )
        for bad, error in damaged:
            note = ""
            if set_aside:
                bad.rename(bad.with_name(f"{bad.name}.damaged"))
                note = f" ({bad.name} renamed to {bad.name}.damaged)"
            warnings.warn(f"{error}; using {path} instead{note}", stacklevel=2)
        return path, checkpoint
    if damaged:
        raise DamagedCheckpoint(f"{damaged[0][1]}; no intact checkpoint is left beside it")
    raise FileNotFoundError("no checkpoint to read")
