"""Training and evaluation of a probe: the core every task folder plugs into.

One run = upstream (frozen under inference_mode, or fine-tuned) -> featurizer -> the task's
expert. Training evaluates dev every ``runner.eval_step`` updates, keeps the best-dev
checkpoint (``best.ckpt``) and the newest step checkpoints, and at the end evaluates test
with the best-dev weights and writes ``results.json``. Under ``torchrun`` each process trains
on its shard of every epoch (DDP) and evaluation statistics are summed over processes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
from tensorboardX import SummaryWriter
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from upstream import Upstream, build_upstream
from corpora.audio_check import AudioScreen, screening
from utility.interrupt import TrainingInterrupted, ignore_interrupts_in_worker, stop_requested
from utility.atomic_write import write_text_atomic
from utility.checkpoint_keeper import CheckpointKeeper
from utility.precision import mixed_precision
from utility.process_defaults import use_task_threads
from utility.process_group import DistributedContext
from utility.schedule import linear_warmup_decay
from utility.update_step import LOG_DIR, UpdateStep
from utility.randomness import capture_rng_state, restore_rng_state, seed_everything

from .base import Expert, ProbeDataset, TaskData, UpstreamInfo
from .batches import epoch_batches, eval_batches
from .discovery import TASKS_DIR, Task, load_task
from .feature_cache import serve_from_cache, upstream_identity
from .featurizer import Featurizer
from .frames import FrameGrid
from .probe import ProbeModel
from .probe_checkpoint import FORMAT, VERSION, RunSpec, read_probe_checkpoint
from .settings import OPTIMIZERS, OptimizerConfig, RunnerConfig, runner_sections
from .subset import proportion_subset
from .upstream_file import RECORD_KEY, upstream_record

RESULTS = "results.json"


def build_upstream_for(spec: RunSpec, device: torch.device) -> Upstream:
    if spec.upstream is None and spec.upstream_ckpt is None:
        raise ValueError("give an upstream name (-u) or an upstream checkpoint (-k)")
    return build_upstream(spec.upstream, spec.upstream_ckpt).to(device)


def build_probe(spec: RunSpec, task: Task, upstream: Upstream, label_names: list[str]) -> ProbeModel:
    info = UpstreamInfo(upstream.hidden_size, upstream.num_hidden_states, FrameGrid(upstream))
    featurizer = Featurizer(upstream.num_hidden_states, spec.layer)
    use_task_threads(task.expert_class.cpu_threads)  # only where a command opted in (utility/process_defaults.py)
    expert = task.expert_class(info, spec.config["expert"], label_names)
    return ProbeModel(upstream, featurizer, expert, spec.fine_tune).to(upstream.device)


def stored_weights(spec: RunSpec, model: ProbeModel) -> dict[str, dict[str, torch.Tensor]]:
    """Trainable weights, plus the upstream's encoder when no checkpoint could rebuild it."""
    weights = model.trainable_state()
    if spec.upstream_ckpt is None and model.upstream.encoder is not None:
        weights["upstream"] = model.upstream.encoder.state_dict()
    return {part: {k: v.detach().cpu() for k, v in state.items()} for part, state in weights.items()}


def write_json(data: dict[str, Any], path: Path) -> None:
    """Written atomically: a reader never sees half a file."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


class Runner:
    """Builds a run from its spec and trains or evaluates it.

    Args:
        spec: task, upstream, layer mode, fine-tuning, seed and the task config.
        context: this process's place in a (possibly single-process) run.
        expdir: the experiment folder (checkpoints, logs, results).
        tasks_dir: where task folders are looked up.
        upstream: an already built upstream honouring the Upstream contract (e.g. one that
            serves cached hidden states); None builds the one ``spec`` names.
    """

    def __init__(
        self,
        spec: RunSpec,
        context: DistributedContext,
        expdir: Path,
        tasks_dir: Path = TASKS_DIR,
        upstream: Optional[Upstream] = None,
    ):
        self.spec = spec
        self.context = context
        self.expdir = Path(expdir)
        self.task = load_task(spec.task, tasks_dir)
        self.runner_config, self.optimizer_config = runner_sections(spec.config)
        self.cache_config = self.runner_config.feature_cache_config(self.expdir)
        seed_everything(spec.seed)
        upstream = build_upstream_for(spec, context.device) if upstream is None else upstream.to(context.device)
        self.upstream_file = upstream_record(spec.upstream_ckpt)
        # Unusable audio is found while the task indexes its corpus, before any update.
        with screening(AudioScreen(self.runner_config.on_unreadable, upstream.min_samples, "runner.on_unreadable")):
            self.data: TaskData = self.task.build_datasets(self.task.data_section(spec.config["data"]), FrameGrid(upstream))
        self.train_indices = proportion_subset(self.data.train.classes, self.runner_config.train_proportion, spec.seed)
        self.model = build_probe(spec, self.task, upstream, self.data.label_names)
        check_enough_classes(self.expert, spec)
        check_frame_targets(self.data, self.expert, spec)
        self.precision = mixed_precision(context.device)
        self.keeper = CheckpointKeeper(self.expdir, self.runner_config.max_keep, higher_is_better=self.expert.higher_is_better)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.train_seconds = 0.0
        self.update: Optional[UpdateStep] = None
        self.served: dict[str, ProbeDataset] = {}  # datasets as the probe reads them (feature cache)
        self.train_loss: Optional[float] = None  # the last logged training loss
        self.stopped_early = False

    def serve(self, splits: list[str]) -> None:
        """Put the given splits (``train``: the training share) behind the feature cache, once."""
        wanted = {name: self.data.train.subset(self.train_indices) if name == "train" else self.data.split(name)
                  for name in splits if name not in self.served}
        if not wanted:
            return
        upstream = self.model.upstream
        identity = upstream_identity(upstream, self.spec.upstream, self.spec.upstream_ckpt)
        self.served.update(serve_from_cache(
            upstream, identity, wanted, self.cache_config, self.spec.layer, self.spec.fine_tune, self.context, self.log
        ))

    def dataset(self, split: str) -> ProbeDataset:
        """A split as the probe reads it (``train``: the training share)."""
        self.serve([split])
        return self.served[split]

    @property
    def expert(self) -> Expert:
        return self.model.expert

    # -----------------------------------------------------------------------------------------
    # Evaluation

    def loader(self, dataset: ProbeDataset, batches: list[list[int]]) -> torch.utils.data.DataLoader:
        workers = self.runner_config.num_workers
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=batches, collate_fn=dataset.collate, num_workers=workers,
            worker_init_fn=ignore_interrupts_in_worker if workers else None,
        )

    def sum_over_processes(self, stats: dict[str, float]) -> dict[str, float]:
        """Statistics summed over every process (a process may have had no batch at all)."""
        if not self.context.is_distributed:
            return stats
        gathered: list[dict[str, float]] = [{} for _ in range(self.context.world_size)]
        dist.all_gather_object(gathered, stats)
        total: dict[str, float] = {}
        for part in gathered:
            add_stats(total, part)
        return total

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        """Metrics of the current weights on one split (summed over all processes)."""
        dataset = self.dataset(split)
        batches = eval_batches(len(dataset), self.runner_config.eval_batch_size, self.context.rank, self.context.world_size)
        was_training = self.model.training
        self.model.eval()
        stats: dict[str, float] = {}
        for batch in tqdm(self.loader(dataset, batches), desc=f"eval {split}", leave=False, disable=not self.context.is_main):
            with self.precision.autocast():
                output = self.model(batch)
            add_stats(stats, output.stats)
        self.model.train(was_training)
        return self.expert.summarize(self.sum_over_processes(stats))

    # -----------------------------------------------------------------------------------------
    # Training state

    def build_update(self, network: torch.nn.Module) -> UpdateStep:
        config: OptimizerConfig = self.optimizer_config
        groups = [{"params": [p for p in (*self.model.featurizer.parameters(), *self.expert.parameters()) if p.requires_grad]}]
        if self.spec.fine_tune:
            groups.append({"params": list(self.model.upstream.parameters()), "lr": config.upstream_lr or config.lr})
        optimizer = OPTIMIZERS[config.name](groups, lr=config.lr, weight_decay=config.weight_decay)
        total = self.runner_config.total_steps
        if config.schedule == "linear":
            scheduler = linear_warmup_decay(optimizer, round(config.warmup_proportion * total), total)
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        return UpdateStep(network, optimizer, scheduler, self.precision, self.runner_config.gradient_clipping)

    def payload(self, dev_metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "run": self.spec.to_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "skipped_steps": self.update.skipped,
            "train_seconds": self.train_seconds,
            "train_loss": self.train_loss,
            "stopped_early": self.stopped_early,
            "label_names": self.data.label_names,
            "weights": stored_weights(self.spec, self.model),
            "layer_weights": self.model.featurizer.layer_weights(),
            "dev_metrics": dev_metrics,
            RECORD_KEY: self.upstream_file,
            **self.update.state_dict(),
            "rng": capture_rng_state(),
        }

    def load_weights(self, checkpoint: dict[str, Any]) -> None:
        check_same_labels(checkpoint.get("label_names"), self.data.label_names, self.spec)
        self.model.load_trainable_state(checkpoint["weights"])

    def resume_from(self, checkpoint: dict[str, Any]) -> None:
        """Continue a run exactly where ``checkpoint`` left it."""
        self.load_weights(checkpoint)
        self.update.load_state_dict(checkpoint)
        self.update.skipped = checkpoint["skipped_steps"]
        self.keeper.load_state_dict(checkpoint[CheckpointKeeper.STATE_KEY])
        for name in ("step", "epoch", "batch_in_epoch", "train_seconds"):
            setattr(self, name, checkpoint[name])
        self.train_loss = checkpoint.get("train_loss")  # absent in checkpoints of older versions
        self.stopped_early = checkpoint.get("stopped_early", False)
        restore_rng_state(checkpoint["rng"])

    # -----------------------------------------------------------------------------------------
    # Training

    def train(self, checkpoint: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """Train to ``runner.total_steps`` (continuing ``checkpoint`` if given), then evaluate
        test with the best-dev weights. Returns the results (also written to results.json)."""
        config: RunnerConfig = self.runner_config
        network = self.model
        if self.context.is_distributed:
            device_ids = [self.context.device] if self.context.device.type == "cuda" else None
            network = DistributedDataParallel(self.model, device_ids=device_ids)
        self.update = self.build_update(network)
        if checkpoint is not None:
            self.resume_from(checkpoint)
        if self.step >= config.total_steps or self.stopped_early:
            self.log(f"{self.expdir} already finished at step {self.step}; nothing to do")
            return self.finish()
        self.serve(["train", "dev", "test"])  # one first pass for every split
        train_set = self.dataset("train")
        if len(train_set) < self.context.world_size:
            raise ValueError(f"{len(train_set)} training utterance(s) cannot feed {self.context.world_size} processes")
        writer = SummaryWriter(str(self.expdir / LOG_DIR)) if self.context.is_main else None
        bar = tqdm(total=config.total_steps, initial=self.step, desc=f"{self.spec.task} train", disable=not self.context.is_main)
        stats: dict[str, float] = {}
        micro = 0
        started = time.monotonic()
        self.model.train()
        while self.step < config.total_steps and not self.stopped_early:
            plan = epoch_batches(
                len(train_set), config.batch_size, self.spec.seed, self.epoch, self.context.rank, self.context.world_size
            )
            for batch in self.loader(train_set, plan[self.batch_in_epoch :]):
                self.batch_in_epoch += 1
                micro += 1
                last = micro == config.gradient_accumulate_steps
                with self.update.micro_batch(last):
                    with self.precision.autocast():
                        output = network(batch)
                    self.update.backward(output.loss / config.gradient_accumulate_steps)
                add_stats(stats, output.stats)
                if not last:
                    continue
                micro = 0
                skipped = self.update.skipped
                grad_norm = self.update.step()
                self.step += 1
                if self.update.skipped > skipped:
                    self.log(f"step {self.step}: non-finite gradient norm, update skipped ({self.update.skipped} so far)")
                bar.update(1)
                if self.step % config.log_step == 0:
                    metrics = self.expert.summarize(stats)
                    self.train_loss = metrics.get("loss", float(output.loss.detach()))
                    self.write_scalars(
                        writer, "train", {**metrics, "grad_norm": grad_norm, "lr": self.update.scheduler.get_last_lr()[0]}
                    )
                    bar.set_postfix(loss=f"{self.train_loss:.3f}")
                    stats = {}
                evaluate = self.step % config.eval_step == 0 or self.step == config.total_steps
                interrupted = self.step < config.total_steps and stop_requested(self.context)
                if evaluate or self.step % config.save_step == 0 or interrupted:
                    self.train_seconds += time.monotonic() - started
                    self.checkpoint(writer, evaluate)
                    started = time.monotonic()
                if interrupted:
                    bar.close()
                    self.stop_interrupted(writer)
                if self.step >= config.total_steps or self.stopped_early:
                    break
            else:
                self.epoch += 1
                self.batch_in_epoch = 0
        bar.close()
        if writer is not None:
            writer.close()
        return self.finish()

    def checkpoint(self, writer: Optional[SummaryWriter], evaluate: bool = True) -> None:
        """Save a step checkpoint; with ``evaluate``, score dev first (best.ckpt when it
        improved) and stop early when dev has not improved for ``early_stopping_patience``
        evaluations (every process decides alike: dev statistics are summed over all)."""
        metrics = self.evaluate("dev") if evaluate else {}
        metric = metrics.get(self.expert.metric)
        patience = self.runner_config.early_stopping_patience
        if evaluate and patience and not self.keeper.is_better(metric):
            since = self.step - (self.keeper.best_step or 0)
            self.stopped_early = since >= patience * self.runner_config.eval_step
        if not self.context.is_main:
            self.keeper.record(metric, self.step)  # the main process saves; the best step is shared
        else:
            self.keeper.save(self.payload(metrics), self.step, metric)
            if evaluate:
                self.write_scalars(writer, "dev", metrics)
                weights = {f"weight_{i}": w for i, w in enumerate(self.model.featurizer.layer_weights())}
                self.write_scalars(writer, "featurizer", weights)
                best = (
                    "best so far"
                    if self.keeper.best_step == self.step
                    else f"best {self.keeper.best_metric:.4f} at step {self.keeper.best_step}"
                )
                others = "".join(
                    f", {name} {value:.4f}" for name, value in metrics.items() if name not in (self.expert.metric, "items")
                )
                self.log(f"step {self.step}: dev {self.expert.metric} {metric:.4f} ({best}){others}")
                if self.stopped_early:
                    self.log(
                        f"step {self.step}: no dev improvement in {patience} evaluations; "
                        "training stops (early_stopping_patience)"
                    )
        # Other processes read best.ckpt from disk at the end: they only wait for it here.
        self.context.barrier()

    def stop_interrupted(self, writer: Optional[SummaryWriter]) -> None:
        """Ctrl-C: the checkpoint of this step is written; close the log and say how to go on."""
        if writer is not None:
            writer.close()
        raise TrainingInterrupted(
            f"interrupted at step {self.step}: saved {self.keeper.path_for(self.step)}; "
            f"continue with: python run_downstream.py -e {self.expdir}"
        )

    def finish(self) -> dict[str, Any]:
        """Reload the best-dev weights, evaluate test, write results.json."""
        best = read_probe_checkpoint(self.keeper.best_path)
        self.load_weights(best)
        test_metrics = self.evaluate("test")
        results = {
            "task": self.spec.task,
            "upstream": self.spec.upstream_label,
            "upstream_checkpoint": self.spec.upstream_ckpt,
            "layer": self.model.featurizer.mode,
            "fine_tune": self.spec.fine_tune,
            "train_proportion": self.runner_config.train_proportion,
            "train_utterances": len(self.train_indices),
            "seed": self.spec.seed,
            "metric": self.expert.metric,
            "higher_is_better": self.expert.higher_is_better,
            "dev": best["dev_metrics"],
            "test": test_metrics,
            "best_step": best["step"],
            "steps": self.step,
            "skipped_steps": self.update.skipped,
            "layer_weights": best["layer_weights"],
            "train_seconds": round(self.train_seconds, 1),
            "stopped_early": self.stopped_early,
            "final_train_loss": self.train_loss,
            **learning_check(self.expert, best["dev_metrics"], self.class_balance()),
        }
        if self.context.is_main:
            if results.get("learned") is False:
                self.log(
                    "warning: the probe did not learn: train longer, raise optimizer.lr, or check the features' "
                    "scale (see downstream/README.md, 'What a run writes')"
                )
            write_json(results, self.expdir / RESULTS)
            verdict = f"; {learning_line(results)}" if "learned" in results else ""
            self.log(
                f"{self.spec.task}: dev {self.expert.metric} {results['dev'][self.expert.metric]:.4f} "
                f"(step {results['best_step']}), test {test_metrics[self.expert.metric]:.4f}{verdict}; "
                f"results in {self.expdir / RESULTS}"
            )
        return results

    def class_balance(self) -> dict[str, Any]:
        """``class_balance`` of the training share and dev (targets as the task built them)."""
        count = len(self.expert.label_names)
        train = class_counts([self.data.train.targets[i] for i in self.train_indices], count)
        return class_balance(train, class_counts(self.data.dev.targets, count))

    # -----------------------------------------------------------------------------------------
    # Output

    def write_scalars(self, writer: Optional[SummaryWriter], prefix: str, values: dict[str, float]) -> None:
        if writer is not None:
            for name, value in values.items():
                writer.add_scalar(f"{prefix}/{name}", value, self.step)

    def log(self, message: str) -> None:
        if self.context.is_main:
            tqdm.write(message)


def data_description(spec: RunSpec) -> str:
    """The data a run reads, for messages: its corpus root, or the task's default corpus."""
    root = spec.config["data"].get("root")
    return f"data.root={root}" if root else f"{spec.task}'s default corpus"


def check_enough_classes(expert: Expert, spec: RunSpec) -> None:
    """A classification probe (metric: accuracy) needs two classes: with one, every prediction
    is right and accuracy 1.0 says nothing."""
    if expert.metric == "accuracy" and len(expert.label_names) < 2:
        raise ValueError(
            f"{spec.task}: the data ({data_description(spec)}) has {len(expert.label_names)} class(es) "
            f"{expert.label_names}; a classification task needs at least 2"
        )


def check_frame_targets(data: TaskData, expert: Expert, spec: RunSpec) -> None:
    """A frame-level task needs one target per upstream frame. Checked on the first utterance of
    each split, before any extraction: a target left at 10 ms (``grid.align`` forgotten) would
    otherwise end in a shape error inside the expert after every utterance was encoded."""
    if expert.prediction_unit != "frames":
        return
    grid = expert.upstream.grid
    for name in ("train", "dev", "test"):
        dataset = data.split(name)
        samples = int(dataset.load_wav(dataset.sources[0]).numel())
        frames, labels = int(grid.num_frames([samples])[0]), int(dataset.targets[0].shape[0])
        if labels != frames:
            raise ValueError(
                f"task {spec.task}: the {name} target of {dataset.utt_ids[0]} has {labels} labels, but the upstream "
                f"gives {frames} frames for its {samples} samples; a frame-level task's build_datasets maps labels to "
                "the upstream's frames with grid.align(labels, num_samples, utt_id) (see downstream/example/dataset.py)"
            )


def check_same_labels(trained: Optional[list[str]], data: list[str], spec: RunSpec) -> None:
    """Refuse to use a probe on data whose classes differ from the ones it was trained on: its
    output index i means the trained ``trained[i]``, so another list scores against wrong labels.
    ``trained`` None: a checkpoint without the record (nothing to compare)."""
    if trained is None or list(trained) == list(data):
        return
    only_trained, only_data = sorted(set(trained) - set(data)), sorted(set(data) - set(trained))
    difference = (
        f"only in the probe: {only_trained[:10]}; only in the data: {only_data[:10]}"
        if only_trained or only_data
        else "the same names in another order"
    )
    raise ValueError(
        f"the probe was trained on {len(trained)} classes and the data ({data_description(spec)}) has {len(data)} "
        f"that differ ({difference}); its outputs would be scored against the wrong labels: use data with the "
        "classes it was trained on"
    )


LEARNED_FRACTION = 0.97  # a dev cross-entropy above this share of the class-balance loss counts as chance
LEARNED_SE = 5.0  # ... unless the dev accuracy is this many binomial standard errors above the majority class's


def class_counts(targets: list[torch.Tensor], num_classes: int) -> torch.Tensor:
    """(num_classes,) how often each class is a target (frames, or utterances); padding skipped."""
    values = torch.cat([t.flatten().long() for t in targets]) if targets else torch.zeros(0, dtype=torch.long)
    return torch.bincount(values[values >= 0], minlength=num_classes)[:num_classes]


def class_balance(train: torch.Tensor, dev: torch.Tensor) -> dict[str, Any]:
    """What a probe gets without looking at the features, from the training share's class
    counts ``train`` and dev's ``dev`` (both (classes,)): the dev accuracy of always answering
    the training's majority class, and the dev cross-entropy of answering the training's class
    shares (one count added to each, so an unseen class costs a finite loss)."""
    prior = (train.double() + 1) / (train.sum() + len(train))
    dev_share = dev.double() / max(int(dev.sum()), 1)
    majority = int(train.argmax())
    return {
        "chance_loss": round(float(-(dev_share * prior.log()).sum()), 4),
        "majority_class_accuracy": round(float(dev_share[majority]), 4),
    }


def learning_check(expert: Expert, dev_metrics: dict[str, float], balance: dict[str, Any]) -> dict[str, Any]:
    """For classification probes (metric: accuracy), the class-balance baselines on dev
    (``class_balance``) and whether the probe beat both: dev accuracy above the majority class's
    and dev loss clearly below the class shares'. A probe that learns only the majority class of
    an 84/16 task has 0.84 accuracy and the class shares' loss: not learned. An accuracy more
    than ``LEARNED_SE`` binomial standard errors (over the dev items) above the majority class's
    is learning whatever the loss: an overfit probe can be so overconfident on its mistakes that
    its cross-entropy exceeds the class shares' while it reads the features well (fine-tuning on
    10 % of a corpus's labels: dev accuracy 0.47 against 0.15, dev loss 3.9 against 3.3).
    Nothing for other tasks."""
    if expert.metric != "accuracy" or "loss" not in dev_metrics or len(expert.label_names) < 2:
        return {}
    accuracy, majority = dev_metrics["accuracy"], balance["majority_class_accuracy"]
    items = dev_metrics.get("items")
    far_above = bool(items) and accuracy > majority + LEARNED_SE * math.sqrt(majority * (1 - majority) / items)
    learned = accuracy > majority and (dev_metrics["loss"] < LEARNED_FRACTION * balance["chance_loss"] or far_above)
    return {**balance, "learned": bool(learned)}


def learning_line(results: dict[str, Any]) -> str:
    """The verdict the run's last line carries: learned or not, against both baselines."""
    verdict = "the probe learned" if results["learned"] else "the probe did NOT learn"
    return (
        f"{verdict} (dev accuracy {results['dev']['accuracy']:.4f} against {results['majority_class_accuracy']:.4f} "
        f"for always the majority class; dev loss {results['dev']['loss']:.3f} against {results['chance_loss']:.3f} "
        "for the class shares)"
    )


def add_stats(total: dict[str, float], stats: dict[str, float]) -> None:
    """Sum one batch's (or one process's) statistics into ``total``."""
    for name, value in stats.items():
        total[name] = total.get(name, 0.0) + float(value)
