"""Probe runs as resumable cells: one (task, upstream, layer, fine-tune, proportion) = one
experiment folder of the downstream runner, with its own ``results.json``.

A cell whose ``results.json`` exists is read, not recomputed; a cell with step checkpoints but
no results continues from the newest one. This is what lets an interrupted analysis continue
where it stopped.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tqdm import tqdm

from downstream.discovery import TASKS_DIR, load_task
from downstream.probe_checkpoint import BEST, STEP_PREFIX, RunSpec, read_probe_checkpoint
from downstream.runner import RESULTS, Runner
from downstream.settings import load_task_config
from upstream import Upstream, build_upstream, get_entry
from utility.training import DistributedContext, resolve_device

from .feature_cache import CachedUpstream


@dataclass(frozen=True)
class UpstreamChoice:
    """An upstream to analyse: a registered name and, optionally, its checkpoint."""

    name: str
    ckpt: Optional[str] = None

    @classmethod
    def parse(cls, text: str) -> "UpstreamChoice":
        """``name`` or ``name:checkpoint_path``."""
        name, _, ckpt = text.partition(":")
        if not name:
            raise ValueError(f"upstream {text!r}: expected NAME or NAME:CHECKPOINT, e.g. aalbert_3L:model.ckpt")
        get_entry(name)  # an unknown name raises, listing the registered ones
        if ckpt and not Path(ckpt).is_file():
            raise FileNotFoundError(f"upstream {text!r}: checkpoint {ckpt} not found; give NAME:PATH to an existing file")
        return cls(name, ckpt or None)

    @property
    def label(self) -> str:
        return self.name

    def build(self) -> Upstream:
        return build_upstream(self.name, self.ckpt)


def parse_upstreams(texts: Sequence[str]) -> list[UpstreamChoice]:
    choices = [UpstreamChoice.parse(text) for text in texts]
    labels = [choice.label for choice in choices]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"upstream(s) {repeated} given twice; each name may appear once per analysis")
    return choices


@dataclass
class ProbeSettings:
    """What every cell of one analysis shares."""

    corpus_root: Optional[str] = None  # None: each task's default (the demo corpus)
    overrides: list[str] = field(default_factory=list)  # task config overrides, KEY=VALUE
    seed: int = 1337
    device: str = "auto"
    tasks_dir: Path = TASKS_DIR


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

    def spec(self, settings: ProbeSettings) -> RunSpec:
        overrides = list(settings.overrides) + [f"runner.train_proportion={self.proportion}"]
        if settings.corpus_root is not None:
            overrides.append(f"data.root={settings.corpus_root}")
        task = load_task(self.task, settings.tasks_dir)
        return RunSpec(
            task=self.task,
            upstream=self.upstream.name,
            upstream_ckpt=self.upstream.ckpt,
            layer=self.layer,
            fine_tune=self.fine_tune,
            seed=settings.seed,
            config=load_task_config(task.config_path, overrides),
        )


def same_settings(stored: Any, current: Any, defaults: Any) -> bool:
    """Whether a stored run's settings equal this command's. A setting missing from the stored
    run (added to the task's config.yaml since it was trained) counts as equal when this
    command leaves it at its default, so adding a switch does not invalidate finished cells.

    ``defaults``: the same structure as ``current`` without any override.
    """
    if not (isinstance(stored, dict) and isinstance(current, dict)):
        return stored == current
    if not set(stored) <= set(current):
        return False  # a setting was removed: the stored run used something this one cannot
    defaults = defaults if isinstance(defaults, dict) else {}
    return all(
        same_settings(stored[key], value, defaults.get(key))
        if key in stored
        else key in defaults and value == defaults[key]
        for key, value in current.items()
    )


def is_finished(cell: Cell, root: Path) -> bool:
    return (cell.folder(root) / RESULTS).is_file()


def run_cell(cell: Cell, root: Path, settings: ProbeSettings, upstream: Optional[Upstream] = None) -> dict[str, Any]:
    """The cell's results: read when finished, otherwise trained (continuing a partial run).

    ``upstream``: a built (e.g. cached) upstream to probe; None builds the one the cell names.
    """
    folder = cell.folder(root)
    spec = cell.spec(settings)
    steps = sorted(folder.glob(f"{STEP_PREFIX}-*.ckpt"))
    checkpoint = read_probe_checkpoint(steps[-1]) if steps else None  # the newest: continue from it
    stored = checkpoint or (read_probe_checkpoint(folder / BEST) if (folder / BEST).is_file() else None)
    task_defaults = load_task_config(load_task(cell.task, settings.tasks_dir).config_path)
    if stored is not None and not same_settings(stored["run"], spec.to_dict(), {"config": task_defaults}):
        # Folders are named by cell, not by every setting: a stored run must match this one.
        raise ValueError(
            f"{folder} holds a probe trained with other settings (corpus, overrides, seed or "
            "checkpoint) than this command's; use another output folder, or delete that one"
        )
    if is_finished(cell, root):
        return json.loads((folder / RESULTS).read_text())
    folder.mkdir(parents=True, exist_ok=True)
    context = DistributedContext(device=resolve_device(settings.device))
    runner = Runner(spec, context, folder, settings.tasks_dir, upstream=upstream)
    return runner.train(checkpoint)


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
        "dev": results["dev"][metric],
        "test": results["test"][metric],
    }


def run_cells(
    choices: Sequence[UpstreamChoice],
    cells_for: Callable[[UpstreamChoice, int], list[Cell]],
    root: Path,
    settings: ProbeSettings,
) -> list[tuple[Cell, dict[str, Any]]]:
    """Every cell ``cells_for(choice, num_hidden_states)`` lists, upstream by upstream.

    Frozen cells of one upstream share one :class:`CachedUpstream`, so it runs once per
    utterance however many layers and proportions are probed; fine-tuned cells build their own.
    """
    done = []
    for choice in tqdm(choices, desc="upstreams", unit="upstream"):
        model = CachedUpstream(choice.build())
        cells = cells_for(choice, model.num_hidden_states)
        for cell in tqdm(cells, desc=f"{choice.label} probes", unit="probe", leave=False):
            done.append((cell, run_cell(cell, root, settings, None if cell.fine_tune else model)))
        del model  # frees the cached hidden states before the next upstream
    return done


def add_probe_arguments(parser: argparse.ArgumentParser, default_tasks: Sequence[str]) -> None:
    """Options every analysis command shares: what to probe, on which corpus, how."""
    parser.add_argument(
        "-u", "--upstreams", nargs="+", required=True, metavar="NAME[:CKPT]",
        help="upstreams to compare, e.g. fbank aalbert_3L:aalbert.ckpt (no checkpoint: random weights)",
    )
    parser.add_argument("-d", "--tasks", nargs="+", default=list(default_tasks), help="task folders to probe with")
    parser.add_argument("--root", help="LibriSpeech-layout corpus for every task (default: the demo corpus)")
    parser.add_argument("-o", "--outdir", type=Path, required=True, help="where cells, tables and plots go")
    parser.add_argument(
        "--override", nargs="+", default=[], metavar="KEY=VALUE",
        help="task config overrides for every probe, e.g. runner.total_steps=500 runner.eval_step=100",
    )
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda or cuda:N")


def settings_from_args(args: argparse.Namespace) -> ProbeSettings:
    return ProbeSettings(corpus_root=args.root, overrides=list(args.override), seed=args.seed, device=args.device)
