"""Probe runs as resumable cells: one (task, upstream, layer, fine-tune, proportion) = one
experiment folder of the downstream runner, with its own ``results.json``.

A cell whose ``results.json`` exists is read, not recomputed; a cell with step checkpoints but
no results continues from the newest one. This is what lets an interrupted analysis continue
where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from tqdm import tqdm

from downstream import experiment
from downstream.discovery import TASKS_DIR, load_task
from downstream.probe_checkpoint import BEST, RunSpec, read_probe_checkpoint
from downstream.runner import RESULTS
from downstream.upstream_file import RECORD_KEY
from downstream.settings import load_task_config
from upstream import Upstream, build_upstream, get_entry
from utility.checkpoint_keeper import SKIP_DAMAGED_FLAG, CheckpointKeeper
from utility.cli import add_override_option
from utility.atomic_write import write_text_atomic
from utility.experiment_lock import ExperimentLock
from utility.integrity import file_sha256
from utility.interrupt import TrainingInterrupted, stop_at_step_boundary

from .keys import corpus_identity, differences


@dataclass(frozen=True)
class UpstreamChoice:
    """An upstream to analyse: a registered name, optionally its checkpoint, and the label it
    goes by in folders, tables and plots (default: the name)."""

    name: str
    ckpt: Optional[str] = None
    given_label: Optional[str] = None

    @classmethod
    def parse(cls, text: str) -> "UpstreamChoice":
        """``NAME``, ``NAME:CHECKPOINT``, or either after ``LABEL=`` (the same model twice, e.g.
        ``random=aalbert_3L pretrained=aalbert_3L:model.ckpt``)."""
        label, equals, rest = text.partition("=")
        if not equals or ":" in label:  # no label (an "=" may still be part of the checkpoint path)
            label, equals, rest = "", "", text
        name, _, ckpt = rest.partition(":")
        if not name or (equals and not label.replace("-", "_").isidentifier()):
            raise ValueError(
                f"upstream {text!r}: expected [LABEL=]NAME[:CHECKPOINT], e.g. aalbert_3L:model.ckpt or random=aalbert_3L"
            )
        get_entry(name)  # an unknown name raises, listing the registered ones
        if ckpt and not Path(ckpt).is_file():
            raise FileNotFoundError(f"upstream {text!r}: checkpoint {ckpt} not found; give NAME:PATH to an existing file")
        return cls(name, ckpt or None, label or None)

    @property
    def label(self) -> str:
        return self.given_label or self.name

    def build(self, seed: int) -> Upstream:
        """The model; random weights (no checkpoint) are drawn from ``seed``, so reruns agree."""
        torch.manual_seed(seed)
        return build_upstream(self.name, self.ckpt)


def parse_upstreams(texts: Sequence[str]) -> list[UpstreamChoice]:
    choices = [UpstreamChoice.parse(text) for text in texts]
    labels = [choice.label for choice in choices]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(
            f"upstream label(s) {repeated} given twice; label each one, "
            f"e.g. random={repeated[0]} pretrained={repeated[0]}:model.ckpt"
        )
    return choices


@dataclass
class ProbeSettings:
    """What every cell of one analysis shares."""

    overrides: list[str] = field(default_factory=list)  # task config overrides, KEY=VALUE (data.root: the corpus)
    seed: int = 1337
    device: str = "auto"
    tasks_dir: Path = TASKS_DIR
    skip_damaged: bool = False  # a cell whose newest checkpoints are damaged continues from its newest intact one


@dataclass(frozen=True)
class Cell:
    """One probe run. ``layer`` None = learnable weighted sum of all hidden states."""

    task: str
    upstream: UpstreamChoice
    layer: Optional[int] = None
    fine_tune: bool = False
    proportion: float = 1.0

    @property
    def mode(self) -> str:
        return "weighted_sum" if self.layer is None else f"layer_{self.layer}"

    def folder(self, root: Path) -> Path:
        name = self.mode + ("_finetune" if self.fine_tune else "")
        if self.proportion != 1.0:
            name += f"_proportion{self.proportion:g}"
        return Path(root) / self.task / self.upstream.label / name

    def spec(self, settings: ProbeSettings, cache_dir: Path) -> RunSpec:
        # Cells share one disk feature cache (a layer sweep extracts once) unless -o says otherwise.
        shared = ["runner.feature_cache=disk", f"runner.feature_cache_dir={cache_dir}"]
        overrides = shared + list(settings.overrides) + [f"runner.train_proportion={self.proportion}"]
        task = load_task(self.task, settings.tasks_dir)
        return RunSpec(
            task=self.task,
            upstream=self.upstream.name,
            upstream_ckpt=self.upstream.ckpt,
            layer=self.layer,
            fine_tune=self.fine_tune,
            seed=settings.seed,
            config=load_task_config(task, None, overrides),
        )


# Where and how features are kept, not what they are: they may differ between a cell's runs.
STORAGE_KEYS = ("feature_cache", "feature_cache_dir", "feature_cache_memory_gb", "num_workers")
# What determines a cell (``cell_key``), written before it trains and checked when it is read back.
KEY_FILE = "cell.json"


def upstream_content(ckpt: Optional[str]) -> Optional[str]:
    """The upstream checkpoint by content: the SHA-256 of its bytes (None: no file, the weights
    are drawn from the probe seed)."""
    return None if ckpt is None else file_sha256(ckpt)


def cell_key(run: dict[str, Any], upstream_sha256: Optional[str]) -> dict[str, Any]:
    """What determines a cell's results: its run's settings (``RunSpec.to_dict()``) without where
    features are kept, the corpus by identity (``data/demo`` and its absolute path are one
    corpus), and the upstream checkpoint by content, not by path: another network at the same
    path is another cell, and a moved study folder still reads its cells back."""
    config = {**run["config"], "runner": {k: v for k, v in run["config"]["runner"].items() if k not in STORAGE_KEYS}}
    if "root" in config.get("data", {}):
        config["data"] = {**config["data"], "root": corpus_identity(config["data"]["root"])}
    settings = {k: v for k, v in run.items() if k != "upstream_ckpt"}
    return {**settings, "config": config, "upstream_sha256": upstream_sha256}


def cell_differences(stored: dict[str, Any], current: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """The settings in which a stored cell's key differs from this command's (``differences``),
    leaving out what cannot change a frozen probe's results: its upstream never trains, so
    ``optimizer.upstream_lr`` is not part of what it is (baselines made by a study that
    fine-tunes are the same cells as another study's)."""

    def determining(key: dict[str, Any]) -> dict[str, Any]:
        optimizer = key.get("config", {}).get("optimizer", {})
        if key.get("fine_tune") or "upstream_lr" not in optimizer:
            return key
        kept = {name: value for name, value in optimizer.items() if name != "upstream_lr"}
        return {**key, "config": {**key["config"], "optimizer": kept}}

    return differences(determining(stored), determining(current), defaults)


def recorded_key(folder: Path, tasks_dir: Path) -> tuple[dict[str, Any], Path]:
    """A finished cell's key and where it was read: its ``KEY_FILE``, or for a cell finished
    before cells recorded one, its ``best.ckpt`` (settings and the upstream file's record)."""
    path = folder / KEY_FILE
    if path.is_file():
        return read_cell_json(path), path
    best = folder / BEST
    if not best.is_file():
        raise ValueError(
            f"{folder} holds results but neither {KEY_FILE} (what made them, recorded since) nor {BEST}: "
            f"its corpus and settings cannot be checked; delete {folder} to train the cell again"
        )
    checkpoint = read_probe_checkpoint(best)
    stored = experiment.stored_spec(checkpoint, (), tasks_dir, best)
    record = checkpoint.get(RECORD_KEY)
    if record is not None:
        sha256 = record["sha256"]
    elif stored.upstream_ckpt is not None and not Path(stored.upstream_ckpt).is_file():
        sha256 = f"unknown: {stored.upstream_ckpt} is gone"
    else:
        sha256 = upstream_content(stored.upstream_ckpt)
    return cell_key(stored.to_dict(), sha256), best


def read_cell_json(path: Path) -> dict[str, Any]:
    """A cell's JSON file (its key or its results); a damaged one is refused naming it."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is damaged ({error}); delete {path.parent} to train the cell again") from None


def is_finished(cell: Cell, root: Path) -> bool:
    return (cell.folder(root) / RESULTS).is_file()


def run_cell(cell: Cell, root: Path, settings: ProbeSettings, upstream: Optional[Upstream] = None) -> dict[str, Any]:
    """The cell's results: read when finished, otherwise trained through the experiment API
    (continuing a partial run from its newest intact checkpoint, under the folder's lock).
    Either way the cell must have been made as this command would make it (``cell_key``): a
    cell made otherwise is refused, naming the settings that differ.

    ``upstream``: a built (e.g. cached) upstream to probe; None builds the one the cell names.
    A fine-tuned cell always builds its own: fine-tuning trains the upstream in place, and a
    shared one would carry the changed weights into the caller's later cells (and its feature
    cache, keyed by the unchanged checkpoint file).
    """
    upstream = None if cell.fine_tune else upstream
    folder = cell.folder(root)
    spec = cell.spec(settings, Path(root).parent / "feature_cache")
    key = cell_key(spec.to_dict(), upstream_content(spec.upstream_ckpt))
    task_defaults = {"config": load_task_config(load_task(cell.task, settings.tasks_dir))}

    def check(stored: dict[str, Any], source: Path) -> None:
        # Folders are named by cell, not by every setting: a stored run must match this one.
        changed = cell_differences(stored, key, task_defaults)
        if changed:
            raise ValueError(
                f"{source} holds a probe made with other settings than this command's ({'; '.join(changed)}); "
                f"use another output folder, or delete {folder} to train the cell again"
            )
        if not (folder / KEY_FILE).is_file():  # a cell from before KEY_FILE: recorded now, checked
            write_text_atomic(folder / KEY_FILE, json.dumps(key, indent=2) + "\n")

    if is_finished(cell, root):
        check(*recorded_key(folder, settings.tasks_dir))
        return read_cell_json(folder / RESULTS)
    if (folder / KEY_FILE).is_file():
        check(*recorded_key(folder, settings.tasks_dir))
    common = {"tasks_dir": settings.tasks_dir, "device": settings.device, "upstream": upstream}
    if CheckpointKeeper(folder).latest() is None:
        check(key, folder)  # records the key before the cell trains
        return experiment.train(spec, folder, **common)
    # Where features are kept is this command's choice, not the stored run's.
    storage = [
        f"runner.{name}={json.dumps(spec.config['runner'][name])}" for name in STORAGE_KEYS if name in spec.config["runner"]
    ]

    def check_resumed(stored: RunSpec, source: Path) -> None:
        # resume() has checked that the stored upstream file is the one the probe was trained on.
        check(cell_key(stored.to_dict(), upstream_content(stored.upstream_ckpt)), source)

    return experiment.resume(folder, overrides=storage, skip_damaged=settings.skip_damaged, check=check_resumed, **common)


def learned_layer_weights(cell: Cell, root: Path) -> list[float]:
    """Softmax weights of a finished weighted-sum cell, from its best-dev probe checkpoint."""
    if cell.layer is not None:
        raise ValueError(f"{cell.mode} probes one hidden state; layer weights exist only for the weighted sum")
    checkpoint = read_probe_checkpoint(cell.folder(root) / BEST)
    return checkpoint["weights"]["featurizer"]["weights"].softmax(-1).tolist()


def result_row(cell: Cell, results: dict[str, Any]) -> dict[str, Any]:
    """One table row: who was probed how, and the cell's dev/test value of the task's metric."""
    metric = results["metric"]
    return {
        "upstream": cell.upstream.label,
        "task": cell.task,
        "layer": cell.mode,
        "fine_tune": cell.fine_tune,
        "train_proportion": cell.proportion,
        "train_utterances": results["train_utterances"],
        "metric": metric,
        "higher_is_better": results["higher_is_better"],
        "learned": results.get("learned", ""),  # classification probes: false = at chance
        "dev": results["dev"][metric],
        "test": results["test"][metric],
        "test_se": standard_error(results["test"], metric),
        "best_step": results["best_step"],
        "steps": results["steps"],
        # A probe whose best dev score came at its last evaluation may still have been improving.
        "converged": results["best_step"] < results["steps"],
        # The weighted sum's softmax weight of every hidden state (one-hot for one layer).
        "layer_weights": results.get("layer_weights"),
    }


def probe_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``result_row`` rows -> one row per task and upstream: test mean +- sd over its probes, the
    mean standard error of one probe's test value, dev mean, and each probe's best / last step."""
    table = []
    for task in dict.fromkeys(row["task"] for row in rows):
        for label in dict.fromkeys(row["upstream"] for row in rows if row["task"] == task):
            mine = [row for row in rows if row["task"] == task and row["upstream"] == label]
            tests = [row["test"] for row in mine]
            errors = [row["test_se"] for row in mine if row["test_se"] is not None]
            spread = f" +- {statistics.stdev(tests):.4f}" if len(tests) > 1 else ""
            table.append(
                {
                    "task": task,
                    "upstream": label,
                    "test": f"{statistics.mean(tests):.4f}{spread}",
                    "test SE": f"{statistics.mean(errors):.4f}" if errors else "n/a",
                    "dev": statistics.mean(row["dev"] for row in mine),
                    "best step / steps": ", ".join(f"{row['best_step']}/{row['steps']}" for row in mine),
                }
            )
    return table


def standard_error(scores: dict[str, Any], metric: str) -> Optional[float]:
    """The binomial standard error of an accuracy over the items it was scored on (None for
    other metrics, and for results stored before the count was). For frame accuracies it is a
    lower bound: frames of one utterance are not independent."""
    items = scores.get("items")
    if metric != "accuracy" or not items:
        return None
    value = scores[metric]
    return math.sqrt(value * (1 - value) / items)


def run_cells(
    choices: Sequence[UpstreamChoice],
    cells_for: Callable[[UpstreamChoice, Upstream], list[Cell]],
    root: Path,
    settings: ProbeSettings,
) -> list[tuple[Cell, dict[str, Any]]]:
    """Every cell ``cells_for(choice, model)`` lists (``model``: the choice built), upstream by upstream.

    Frozen cells of one upstream share one built model and the runner's disk feature cache in
    ``root/../feature_cache``, so the upstream runs once per utterance however many layers,
    proportions and tasks are probed; fine-tuned cells build their own.

    Ctrl-C stops the probe in training at its next step with a checkpoint and
    says how to continue: the same command again.
    """
    done = []
    try:
        with stop_at_step_boundary():
            for choice in tqdm(choices, desc="upstreams", unit="upstream"):
                model = choice.build(settings.seed)
                cells = cells_for(choice, model)
                for cell in tqdm(cells, desc=f"{choice.label} probes", unit="probe", leave=False):
                    done.append((cell, run_cell(cell, root, settings, model)))
                del model  # frees the cached hidden states before the next upstream
    except KeyboardInterrupt as stop:  # TrainingInterrupted too: its hint names run_downstream.py
        saved = str(stop).split("; continue with")[0] if isinstance(stop, TrainingInterrupted) else "interrupted (Ctrl-C)"
        raise TrainingInterrupted(
            f"{saved}; run the same command again to continue (the {len(done)} finished probe(s) under {root} are "
            "read, not retrained)"
        ) from None
    return done


def add_probe_arguments(parser: argparse.ArgumentParser, default_tasks: Sequence[str]) -> None:
    """Options every analysis command shares: what to probe, on which corpus, how."""
    parser.add_argument(
        "-u",
        "--upstreams",
        nargs="+",
        required=True,
        metavar="[LABEL=]NAME[:CKPT]",
        help="upstreams to compare, e.g. fbank aalbert_3L:aalbert.ckpt random=aalbert_3L (no checkpoint: random weights)",
    )
    parser.add_argument("-d", "--tasks", nargs="+", default=list(default_tasks), help="task folders to probe with")
    parser.add_argument("-p", "--outdir", type=Path, required=True, help="output folder: cells, tables and plots")
    add_override_option(
        parser,
        help="task config override for every probe, as in run_downstream.py, e.g. -o data.root=/data/LibriSpeech "
        "runner.total_steps=500 (default corpus: the demo data)",
    )
    parser.add_argument(
        "--seed", type=int, default=1337, help="probe seed; also draws the weights of upstreams without a checkpoint"
    )
    parser.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda or cuda:N")
    parser.add_argument(
        SKIP_DAMAGED_FLAG,
        action="store_true",
        help="a cell whose newest checkpoints are damaged continues from its newest intact one",
    )


def settings_from_args(args: argparse.Namespace) -> ProbeSettings:
    return ProbeSettings(overrides=override_list(args), seed=args.seed, device=args.device, skip_damaged=args.skip_damaged)


def own_outdir(outdir: Path) -> ExperimentLock:
    """The output folder's lock: one analysis at a time writes its cells, tables and plots
    (a second one is refused, naming the first, like a second training run on a folder)."""
    return ExperimentLock(outdir)


def override_list(args: argparse.Namespace) -> list[str]:
    """``-o`` values, flattened (each ``-o`` takes one or more KEY=VALUE)."""
    return list(args.override)


def corpus_root(args: argparse.Namespace) -> Optional[str]:
    """The ``data.root`` override, if any (None: the demo corpus)."""
    roots = [item.partition("=")[2] for item in override_list(args) if item.startswith("data.root=")]
    return roots[-1] if roots else None
