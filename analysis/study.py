"""The pretraining study, one command: does masked acoustic modelling learn something that
random weights of the same architecture lack?

    python -m analysis.study -p result/study/cpu_small --pretrain-corpus PRETRAIN_ROOT \\
        --eval-corpus EVAL_ROOT --recipe pretrain/recipes/cpu_small.yaml \\
        --upstreams aalbert_3L mockingjay_3L --steps 6000

Every input (recipe and overrides, the corpora's subsets and labels, task names, probe
settings) is checked before anything is written or trained. Stages, each resumable (rerun the
same command after a stop: finished parts are read back, a stopped pretraining run or probe
continues from its newest checkpoint). A part made with other settings than the command's
(recipe, overrides, corpus, seed, updates) is refused before anything is trained, naming the
setting: give another ``-p`` for other settings.

1. pretraining: each upstream with the recipe on the pretraining corpus, for the same number of
   updates (``--steps``; or ``--minutes`` lays the first upstream's schedule over a wall-clock
   budget and the others get its number of updates), in ``OUT/pretrain/<upstream>``; with
   ``--pretrain-seeds A B ...`` one run per seed (``runner.seed``), the first in that folder,
   the others in ``OUT/pretrain/<upstream>_seed<k>``;
2. learning curves: the held-out masked L1 of every step checkpoint next to the trivial
   predictors (``pretrain/baselines.py``) and the update where each is first beaten;
3. random-weight networks: the pretrained run's architecture, initialised as pretraining
   starts, from ``--random-seeds`` seeds (``OUT/random/<upstream>_seed<k>.ckpt``);
4. probes on the evaluation corpus: the learned weighted sum for every pretrained checkpoint
   and every random network, each with ``--probe-seeds`` probe seeds; each hidden state alone
   for the first pretrained checkpoint and the first random network (first probe seed); the
   surface baselines (``analysis/baselines.py``: fbank, mel, mel_raw, the pretrained network's
   own input) with the same probes; every probe stops on a dev plateau;
5. the seed's grid, each part asked for by an option: the weighted-sum probes again with shares
   of the training labels (``--proportions 0.01 0.1``), every network also fine-tuned with its
   probe on the tasks named by ``--fine-tune`` (with every share, or those of
   ``--fine-tune-proportions``; after every other probe, being the dearest), and t-SNE pictures
   of the first pretrained and random networks and the baselines (``--tsne``);
6. ``OUT/report.md``: mean +- standard deviation, the difference with Welch's 95 % interval
   against random weights and against the best surface baseline, probes not converged,
   layer by layer, the families side by side, plots. The unit of the comparison is the network
   (its probes averaged over probe seeds) once both groups have two networks or more: probes of
   one network share its weights, so they are not independent draws of what pretraining gives.
   With one pretrained network the unit is the probe, and the interval then covers probe-seed
   noise only, not the spread between pretraining runs (the report says which). The wall time
   of every part, summed over the commands that built the folder, closes the report.

The seed's grid at CPU scale (speakers at utterance and frame level, phones fine-tuned, 1 % and
10 % of the labels, both families at equal width, pictures):

    python -m analysis.study -p result/study/grid --pretrain-corpus PRETRAIN_ROOT \
        --eval-corpus EVAL_ROOT --recipe pretrain/recipes/cpu_small.yaml --steps 6000 \
        -d phone_1hidden speaker_utterance speaker_frame --fine-tune phone_1hidden \
        --proportions 0.01 0.1 --tsne

The pretraining and evaluation corpora should share no speaker and no sentence (see
``docs/results/pretraining_small.md`` for how the study's corpora were made).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import shlex
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import utility.openmp_wait  # noqa: F401  (first: OpenMP reads its wait policy when torch loads)

import torch
from scipy import stats

from corpora.index import find_utterances
from downstream.discovery import load_task
from downstream.experiment import new_spec
from downstream.frames import FrameGrid
from pretrain.baselines import PREDICTORS, trivial_losses
from pretrain.data import BatchMaker, dev_batches, select_utterances
from pretrain.runner import pretrain
from pretrain.settings import load_settings, stored_settings
from pretrain.state import SECTION
from upstream import Upstream, build_upstream
from upstream.checkpoint import save_upstream
from upstream.files import read_upstream_checkpoint
from utility.atomic_write import write_text_atomic
from utility.checkpoint_file import read_checkpoint_file
from utility.checkpoint_keeper import CheckpointKeeper
from utility.cli import ArgumentParser, add_override_option, run_cli

from .baselines import baseline_choices, best_baseline, pools_to_constant, probes_with
from .cells import Cell, ProbeSettings, UpstreamChoice, is_finished, own_outdir, probe_summary, result_row, run_cell
from .keys import corpus_identity, differences
from .layerwise import plot_layerwise
from .parallel_cells import run_cells_side_by_side
from .plotting import plt, save_figure
from .tables import markdown_table, report_header, write_table
from .tsne import TsneData, corpus_label_files, plot_corpus_tsne
from .wall_time import WallTime

DEFAULT_TASKS = ("phone_linear", "speaker_utterance")
# Probes trained to a dev plateau (5 evaluations, 500 updates, without gain); the report flags any
# probe whose best dev score came at its last step.
DEFAULT_PROBE_OVERRIDES = (
    "runner.total_steps=20000",  # a cap: probes stop on a dev plateau long before it
    "runner.eval_step=100",
    "runner.log_step=100",
    "runner.early_stopping_patience=5",
)
REPORT = "report.md"
WALL_TIME = "wall_time.json"  # analysis.wall_time: seconds per part over every command
TSNE_SUBSET = "test-clean"
TSNE_UTTERANCES = 200
TSNE_FRAMES = 2000
TSNE_LEVELS = {"utterance": "speakers", "frame": "phones"}
BASELINE_COLUMNS = ["task", "upstream", "test", "test SE", "dev", "best step / steps"]
RECIPE_SEED = "the recipe's runner.seed"
LAYER_WEIGHTS_COLUMNS = [
    "task",
    "upstream",
    "weighted sum test",
    "best layer (dev)",
    "its test",
    "weighted sum - best layer",
    "layer weights (0 = input)",
    "weighted sum, all probe seeds",
]
WEIGHTED_SUM_COLUMNS = [
    "family",
    "task",
    "probe",
    "train proportion",
    "metric",
    "pretrained",
    "random",
    "difference",
    "welch_95ci",
    "best baseline",
    "vs baseline",
    "vs baseline 95ci",
]


@dataclass(frozen=True)
class StudyPlan:
    """What one study run does; folders follow from ``outdir``."""

    outdir: Path
    pretrain_corpus: Path
    eval_corpus: Path
    recipe: Optional[Path]
    upstreams: tuple[str, ...]
    steps: Optional[int]
    minutes: Optional[float]
    tasks: tuple[str, ...]
    probe_seeds: tuple[int, ...]
    random_seeds: tuple[int, ...]
    probe_overrides: tuple[str, ...]
    pretrain_overrides: tuple[str, ...] = ()
    device: str = "auto"
    report_only: bool = False  # report what is finished; train nothing
    pretrain_seeds: tuple[int, ...] = ()  # (): one run per upstream with the recipe's runner.seed
    # The seed's grid: shares of the training labels besides all of them, tasks whose networks are
    # also fine-tuned, and t-SNE pictures.
    proportions: tuple[float, ...] = ()
    fine_tune_tasks: tuple[str, ...] = ()
    # Shares of the labels to fine-tune with; (): all of them and every one of ``proportions``.
    fine_tune_proportions: tuple[float, ...] = ()
    tsne: bool = False
    jobs: int = 1  # probes trained side by side, each in its own process

    @property
    def fine_tune_shares(self) -> tuple[float, ...]:
        return self.fine_tune_proportions or (1.0, *self.proportions)

    def pretrain_dir(self, upstream: str, seed: Optional[int] = None) -> Path:
        """The first run keeps the folder of a one-run study, so older studies read back."""
        if seed is None or seed == self.pretrain_seeds[0]:
            return self.outdir / "pretrain" / upstream
        return self.outdir / "pretrain" / f"{upstream}_seed{seed}"

    def pretrain_runs(self, upstream: str) -> list[tuple[Optional[int], Path]]:
        """(seed, folder) of every pretraining run of ``upstream``; seed None: the recipe's."""
        seeds: Sequence[Optional[int]] = self.pretrain_seeds or [None]
        return [(seed, self.pretrain_dir(upstream, seed)) for seed in seeds]

    def random_ckpt(self, upstream: str, seed: int) -> Path:
        return self.outdir / "random" / f"{upstream}_seed{seed}.ckpt"

    def probe_root(self, probe_seed: int) -> Path:
        # One feature cache (OUT/probes/feature_cache) serves every probe seed.
        return self.outdir / "probes" / f"seed{probe_seed}"


# ---- 0. inputs -----------------------------------------------------------------------------


@contextlib.contextmanager
def blaming(option: str) -> Iterator[None]:
    """A refusal of an input, prefixed with the option that gave it."""
    try:
        yield
    except (FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        raise type(error)(f"{option}: {message}") from None


def check_inputs(plan: StudyPlan) -> None:
    """Everything the study will need, checked before anything is written or trained (a typo
    must not cost the hours of pretraining before it): every upstream's pretraining settings
    (recipe, overrides), the pretraining corpus's subsets, and for every task its name, the
    probe settings (``-o``) and its splits and labels on the evaluation corpus."""
    first = plan.pretrain_seeds[0] if plan.pretrain_seeds else None
    models = []
    for upstream in plan.upstreams:
        with blaming(f"pretraining {upstream} (--recipe, --pretrain-override)"):
            settings = load_settings(upstream, plan.recipe, pretraining_overrides(plan, first, plan.steps))
        models.append(settings.model)
    subsets = [*settings.corpus.subsets, *settings.corpus.dev_subsets]
    with blaming(f"--pretrain-corpus (corpus.subsets and corpus.dev_subsets: {subsets})"):
        find_utterances(plan.pretrain_corpus, subsets, progress=False)
    # The label grid of the first architecture (the families of one study share a front end).
    grid = FrameGrid(Upstream(models[0]))
    for task_name in plan.tasks:
        with blaming(f"probe settings of task {task_name} (-d, -o)"):
            spec = new_spec(task_name, plan.upstreams[0], seed=plan.probe_seeds[0], overrides=probe_overrides(plan))
        task = load_task(task_name)
        with blaming(f"--eval-corpus {plan.eval_corpus}, task {task_name}"):
            task.build_datasets(task.data_section(spec.config["data"]), grid)
    if plan.tsne:
        with blaming(f"--tsne (the pictures show {TSNE_SUBSET} of --eval-corpus with its alignments)"):
            data = TsneData(root=str(plan.eval_corpus), subsets=[TSNE_SUBSET])
            find_utterances(plan.eval_corpus, data.subsets, progress=False)
            label_files, phones = corpus_label_files(data, plan.eval_corpus)
            for path in (*label_files, phones):
                if not path.is_file():
                    raise FileNotFoundError(f"{path} not found")


# ---- 1. pretraining ------------------------------------------------------------------------


@dataclass(frozen=True)
class PretrainedRun:
    """One finished pretraining run: its upstream, seed, folder and label in folders and tables."""

    upstream: str
    seed: int
    folder: Path
    first: bool  # the upstream's first run: layer-wise probes, the family table, the random architecture

    @property
    def best(self) -> Path:
        return self.folder / "best.ckpt"

    @property
    def label(self) -> str:
        """Probe folders and curves: the run's folder name (``StudyPlan.pretrain_dir``)."""
        return self.folder.name


def pretraining_overrides(plan: StudyPlan, seed: Optional[int], steps: Optional[int]) -> list[str]:
    """What the study sets on top of ``--recipe`` for one run (``steps`` None: the ``--minutes`` budget)."""
    budget = [f"runner.total_steps={steps}"] if steps else [f"runner.max_minutes={plan.minutes}"]
    chosen = [] if seed is None else [f"runner.seed={seed}"]
    # The corpus as an absolute path: the run's settings name it wherever the study is run from.
    return [f"corpus.root={corpus_identity(plan.pretrain_corpus)}", *budget, *plan.pretrain_overrides, *chosen]


def pretraining_key(settings: dict[str, Any], calibrated: bool) -> dict[str, Any]:
    """A run's resolved settings as two commands must agree on: the corpus by identity, without
    ``runner.total_steps`` when a ``--minutes`` budget set it (``calibrated``), and without the
    front end's normalisation when ``data.corpus_cmvn`` set it."""
    runner = {k: v for k, v in settings["runner"].items() if not (calibrated and k == "total_steps")}
    key = {**settings, "corpus": {**settings["corpus"], "root": corpus_identity(settings["corpus"]["root"])}, "runner": runner}
    if settings["data"].get("corpus_cmvn"):
        # The run computed these from data.corpus_cmvn when it started: the setting is what to compare.
        frontend = {k: v for k, v in settings["model"]["frontend"].items() if k not in ("cmvn", "corpus_stats")}
        key["model"] = {**settings["model"], "frontend": frontend}
    return key


def check_pretraining(plan: StudyPlan) -> None:
    """Refuse, before anything is trained or written, a pretraining folder whose run was made
    with other settings than this command resolves (recipe content, overrides, corpus, seed,
    updates): reusing it would report settings it was not trained with, and continuing it would
    train to its own ``runner.total_steps``."""
    steps = plan.steps
    for upstream in plan.upstreams:
        for seed, folder in plan.pretrain_runs(upstream):
            if not CheckpointKeeper(folder).step_checkpoints():
                # This run starts anew: probes of an earlier network of that name cannot be its probes.
                earlier = [f for f in plan.outdir.glob(f"probes/*/*/{folder.name}_pretrained") if f.is_dir()]
                if earlier:
                    raise ValueError(
                        f"{earlier[0]} holds probes of an earlier pretraining run in {folder}, which holds none now: "
                        f"delete {plan.outdir / 'probes' / '*' / '*' / earlier[0].name} to probe the new run, "
                        "or give another -p"
                    )
                continue
            stored = settings_of(folder)
            if seed is not None and stored.runner.seed != seed:
                raise ValueError(
                    f"{folder} holds a pretraining run with runner.seed={stored.runner.seed}, not {seed}: "
                    "list that seed first in --pretrain-seeds (the first run keeps this folder), or use another -p"
                )
            planned = load_settings(upstream, plan.recipe, pretraining_overrides(plan, seed, steps))
            calibrated = steps is None  # the first run of a --minutes study: its budget set total_steps
            changed = differences(pretraining_key(stored.to_dict(), calibrated), pretraining_key(planned.to_dict(), calibrated))
            if changed:
                raise ValueError(
                    f"{folder} holds a pretraining run made with other settings than this command's "
                    f"({'; '.join(changed)}): rerun with the settings it was made with, give another -p, "
                    f"or delete {folder} to pretrain it again"
                )
            steps = steps or int(stored.runner.total_steps)  # the others get the same updates


def pretrain_all(plan: StudyPlan, missing: list[str]) -> dict[str, list[PretrainedRun]]:
    """Pretrain (or finish pretraining) every run (``check_pretraining`` first); returns each
    upstream's finished runs. With ``plan.report_only`` an unfinished run other than an
    upstream's first is listed in ``missing`` and left out."""
    steps = plan.steps
    runs: dict[str, list[PretrainedRun]] = {}
    for upstream in plan.upstreams:
        runs[upstream] = []
        for index, (seed, folder) in enumerate(plan.pretrain_runs(upstream)):
            kept = CheckpointKeeper(folder).step_checkpoints()
            stored = settings_of(folder) if kept else None
            if plan.report_only:
                done, total = (kept[-1][0], stored.runner.total_steps) if stored is not None else (0, 0)
                if not done or done < total:
                    if index == 0:
                        raise FileNotFoundError(f"--report-only: {folder} holds no finished pretraining run")
                    missing.append(f"`{folder.relative_to(plan.outdir)}` (pretraining: update {done} of {total})")
                    continue
            elif stored is not None:
                pretrain(resume=folder, device=plan.device)
            else:
                pretrain(
                    upstream=upstream,
                    experiment=folder,
                    config_file=plan.recipe,
                    device=plan.device,
                    overrides=pretraining_overrides(plan, seed, steps),
                )
            settings = stored if plan.report_only else settings_of(folder)  # after this command's updates
            steps = steps or int(settings.runner.total_steps)  # the others get the same updates
            runs[upstream].append(PretrainedRun(upstream, settings.runner.seed, folder, first=index == 0))
    return runs


def settings_of(folder: Path):
    """The settings of a pretraining run, from its newest step checkpoint."""
    path = CheckpointKeeper(folder).latest()
    if path is None:
        raise FileNotFoundError(f"{folder} holds no pretraining checkpoint")
    checkpoint = read_checkpoint_file(path)
    return stored_settings(checkpoint[SECTION]["settings"], str(path))


# ---- 2. learning curves --------------------------------------------------------------------


def learning_curve(folder: Path) -> dict[str, Any]:
    """Held-out masked L1 at every step checkpoint, the trivial predictors on the same held-out
    masks (recomputed from the run's settings, so older runs get every predictor), and the
    first checkpoint at which each predictor is beaten (None: never)."""
    settings = settings_of(folder)
    dev = select_utterances(settings, settings.corpus.dev_subsets, BatchMaker(settings).min_samples())
    micro = max(1, settings.data.batch_size // settings.runner.gradient_accumulate_steps)
    baselines = trivial_losses(dev_batches(dev[: settings.corpus.dev_utterances], settings, micro), settings.downsample_rate)
    curve, counters = [], {}
    for step, path in CheckpointKeeper(folder).step_checkpoints():
        checkpoint = read_checkpoint_file(path)
        counters = checkpoint[SECTION]["counters"]  # the newest checkpoint's, after the loop
        if checkpoint["metadata"].get("dev_masked_l1") is not None:
            curve.append((step, float(checkpoint["metadata"]["dev_masked_l1"])))
    first = {name: next((step for step, value in curve if value < baseline), None) for name, baseline in baselines.items()}
    return {
        "curve": curve,
        "baselines": baselines,
        "first_beaten": first,
        "total_steps": settings.runner.total_steps,
        # None: a run made before its checkpoints recorded their wall time.
        "train_seconds": counters.get("train_seconds"),
    }


def plot_curves(curves: dict[str, dict[str, Any]], path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(7, 4), layout="constrained")
    for index, (upstream, curve) in enumerate(curves.items()):
        steps, values = zip(*curve["curve"]) if curve["curve"] else ((), ())
        axis.plot(steps, values, label=f"{upstream}", color=f"C{index}")
    styles = {"zeros": ":", "utterance_mean": "-.", "copy": "--", "interpolation": (0, (5, 1))}
    baselines = next(iter(curves.values()))["baselines"]  # the first run's (each run draws its own held-out masks)
    for name, value in baselines.items():
        axis.axhline(value, color="grey", linestyle=styles.get(name, ":"), linewidth=1, label=f"{name} {value:.3f}")
    axis.set_xlabel("update")
    axis.set_ylabel("held-out masked L1")
    axis.legend(fontsize=8)
    return save_figure(figure, path)


# ---- 3. random-weight networks -------------------------------------------------------------


def random_networks(plan: StudyPlan, pretrained: dict[str, list[PretrainedRun]]) -> dict[str, list[Path]]:
    """For each upstream, ``--random-seeds`` networks of the pretrained checkpoint's exact
    architecture, initialised as pretraining initialises (``torch.manual_seed``, then
    ``Upstream(config)``), saved once as upstream checkpoints."""
    made = {}
    for upstream, runs in pretrained.items():
        config, _, _ = read_upstream_checkpoint(runs[0].best)
        made[upstream] = []
        for seed in plan.random_seeds:
            path = plan.random_ckpt(upstream, seed)
            # Built again when the recipe changed the architecture (its probes then no longer match it).
            if not path.is_file() or read_upstream_checkpoint(path)[0].to_dict() != config.to_dict():
                torch.manual_seed(seed)
                save_upstream(Upstream(config), path, upstream, metadata={"random_weights_seed": seed})
            made[upstream].append(path)
    return made


# ---- 4. probes -----------------------------------------------------------------------------


def probe_overrides(plan: StudyPlan) -> list[str]:
    """Every probe's task config overrides: the evaluation corpus, then the study's settings."""
    return [f"data.root={plan.eval_corpus}", *plan.probe_overrides]


def study_models(
    plan: StudyPlan, pretrained: dict[str, list[PretrainedRun]], random: dict[str, list[Path]]
) -> list[tuple[str, str, Optional[int], bool, UpstreamChoice]]:
    """(family, kind, upstream seed, probed layer by layer, the model) of everything the study
    probes: every pretraining run, every random network, and the surface baselines."""
    models: list[tuple[str, str, Optional[int], bool, UpstreamChoice]] = []
    for upstream, runs in pretrained.items():
        models += [
            (upstream, "pretrained", run.seed, run.first, UpstreamChoice(upstream, str(run.best), f"{run.label}_pretrained"))
            for run in runs
        ]
        for seed, path in zip(plan.random_seeds, random[upstream]):
            choice = UpstreamChoice(upstream, str(path), f"{upstream}_random{seed}")
            models.append((upstream, "random", seed, seed == plan.random_seeds[0], choice))
    # The surface features, probed exactly like the networks (their own family in the tables).
    first_runs = [(runs[0].label, str(runs[0].best)) for runs in pretrained.values() if runs]
    models += [(choice.label, "baseline", None, False, choice) for choice in baseline_choices(first_runs)]
    return models


def probe_all(
    plan: StudyPlan,
    pretrained: dict[str, list[PretrainedRun]],
    random: dict[str, list[Path]],
    missing: list[str],
    wall_time: WallTime,
) -> list[dict[str, Any]]:
    """Every probe of the study as table rows (with ``kind``, ``upstream_seed``: the pretraining
    or random-weight seed, ``probe_seed``); with ``plan.report_only``, unfinished probes are
    listed in ``missing`` instead of trained.

    Probes run cheapest and most needed first, so that a study stopped early has whole
    comparisons: every model's weighted sum with all the labels (the baselines' included), then
    each layer alone, then fewer labels, then fine-tuning (each of its updates is a forward and
    backward pass of the network); within each, the first network of every kind before the
    second ones."""
    models = study_models(plan, pretrained, random)

    def rank(model: tuple) -> int:  # its place among the models of its family and kind
        return [m for m in models if m[:2] == model[:2]].index(model)

    work: list[tuple[Cell, Path, ProbeSettings]] = []
    about: list[tuple[dict[str, Any], str]] = []  # each cell's row fields and wall-time part
    for stage, (family, kind, upstream_seed, layer_wise, choice) in itertools.product(PROBE_STAGES, sorted(models, key=rank)):
        model = build_upstream(choice.name, choice.ckpt)
        for probe_seed in plan.probe_seeds:
            settings = ProbeSettings(overrides=probe_overrides(plan), seed=probe_seed, device=plan.device)
            for task in plan.tasks:
                if not probes_with(model, task, settings.tasks_dir):
                    continue
                layer_wise_here = layer_wise and probe_seed == plan.probe_seeds[0]
                cells = model_cells(plan, task, choice, kind, model.num_hidden_states, layer_wise_here)
                for cell in (cell for cell in cells if probe_stage(cell) == stage):
                    if plan.report_only and not is_finished(cell, plan.probe_root(probe_seed)):
                        missing.append(f"`{cell.folder(plan.probe_root(probe_seed)).relative_to(plan.outdir)}`")
                        continue
                    work.append((cell, plan.probe_root(probe_seed), settings))
                    fields = {"family": family, "kind": kind, "upstream_seed": upstream_seed, "probe_seed": probe_seed}
                    about.append((fields, probe_part(cell, kind)))
        del model
    results: list[Optional[dict[str, Any]]] = [None] * len(work)

    def finished(index: int, cell_results: dict[str, Any], seconds: float) -> None:
        results[index] = cell_results
        wall_time.add(about[index][1], seconds)

    if plan.jobs > 1 and not plan.report_only:
        run_cells_side_by_side(work, plan.jobs, finished)
    else:
        built: dict[str, Upstream] = {}  # one model at a time, shared by its consecutive frozen cells
        for index, (cell, root, settings) in enumerate(work):
            if not cell.fine_tune and cell.upstream.label not in built:  # a fine-tuned cell builds its own
                built = {cell.upstream.label: build_upstream(cell.upstream.name, cell.upstream.ckpt)}
            with wall_time.part(about[index][1]):
                results[index] = run_cell(cell, root, settings, built.get(cell.upstream.label))
    return [{**result_row(cell, r), **fields} for (cell, _, _), r, (fields, _) in zip(work, results, about)]


def model_cells(
    plan: StudyPlan, task: str, choice: UpstreamChoice, kind: str, hidden_states: int, layer_wise: bool
) -> list[Cell]:
    """One model's probes on one task: the weighted sum with all the labels, each hidden state
    alone (``layer_wise``), the weighted sum with each smaller share of the labels, and for a
    network on a ``--fine-tune`` task the fine-tuned probe with each of ``plan.fine_tune_shares``."""
    cells = [Cell(task, choice)]
    if layer_wise:
        cells += [Cell(task, choice, layer) for layer in range(hidden_states)]
    cells += [Cell(task, choice, proportion=proportion) for proportion in plan.proportions]
    if kind != "baseline" and task in plan.fine_tune_tasks:
        cells += [Cell(task, choice, fine_tune=True, proportion=proportion) for proportion in plan.fine_tune_shares]
    return cells


PROBE_STAGES = ("weighted sum", "layer by layer", "fewer labels", "fine-tuned")  # in the order they run


def probe_stage(cell: Cell) -> str:
    """The stage of ``PROBE_STAGES`` that runs ``cell``."""
    if cell.fine_tune:
        return "fine-tuned"
    if cell.layer is not None:
        return "layer by layer"
    return "weighted sum" if cell.proportion == 1.0 else "fewer labels"


def probe_part(cell: Cell, kind: str) -> str:
    """The part of the study a probe's wall time counts to."""
    if kind == "baseline":
        return "probes: surface baselines"
    if cell.fine_tune:
        return "probes: fine-tuned"
    if cell.proportion != 1.0:
        return "probes: weighted sum, fewer labels"
    return "probes: weighted sum" if cell.layer is None else "probes: layer by layer"


# ---- 5. t-SNE ------------------------------------------------------------------------------


def tsne_pictures(plan: StudyPlan, pictures: Sequence[tuple[UpstreamChoice, str, Path]]) -> None:
    """Draws the ``tsne_plan`` pictures, ``OUT/tsne/<model>_<speakers|phones>.png``: utterances
    by speaker and frames by broad phone class (``TSNE_SUBSET`` of the evaluation corpus, at most
    ``TSNE_UTTERANCES`` utterances; the average of all hidden states). Drawn anew by every
    command that asks: they are cheap next to the probes, so they never show an earlier model."""
    data = TsneData(root=str(plan.eval_corpus), subsets=[TSNE_SUBSET])
    for choice, level, path in pictures:
        path.parent.mkdir(exist_ok=True)
        model = build_upstream(choice.name, choice.ckpt)
        title = f"{choice.label}: {TSNE_LEVELS[level]}"
        plot_corpus_tsne(model, data, level, None, path, TSNE_FRAMES, title=title, max_utterances=TSNE_UTTERANCES)


def tsne_plan(
    plan: StudyPlan, pretrained: dict[str, list[PretrainedRun]], random: dict[str, list[Path]]
) -> list[tuple[UpstreamChoice, str, Path]]:
    """(model, level, picture) of every t-SNE picture the study draws: the first pretrained run
    and random network of each family and every baseline, at both levels; no utterance-level
    picture of features that pool to zero."""
    pictures = []
    for _, kind, _, layer_wise, choice in study_models(plan, pretrained, random):
        if kind != "baseline" and not layer_wise:
            continue
        constant = kind == "baseline" and pools_to_constant(build_upstream(choice.name, choice.ckpt))
        for level, what in TSNE_LEVELS.items():
            if not (level == "utterance" and constant):
                pictures.append((choice, level, plan.outdir / "tsne" / f"{choice.label}_{what}.png"))
    return pictures


# ---- 6. report -----------------------------------------------------------------------------


def compare(pretrained: dict[Any, list[float]], random: dict[Any, list[float]]) -> dict[str, Any]:
    """Each group's mean +- sample standard deviation, the difference of means and Welch's 95 %
    interval for it (the groups may differ in size and spread; "n/a" where neither group has
    any). Groups map a network (its seed) to its probes' values; the unit is the network (mean
    over its probes) when both groups have two networks or more, else the probe."""
    unit = "networks" if len(pretrained) > 1 and len(random) > 1 else "probes"

    def units(groups: dict[Any, list[float]]) -> list[float]:
        if unit == "networks":
            return [statistics.mean(values) for values in groups.values()]
        return [value for values in groups.values() for value in values]

    def summary(values: Sequence[float]) -> str:
        # One value has no spread: no "+- nan".
        spread = f" +- {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.4f}{spread} (n={len(values)} {unit})"

    a, b = units(pretrained), units(random)
    row = {
        "pretrained": summary(a),
        "random": summary(b),
        "difference": statistics.mean(a) - statistics.mean(b),
        "welch_95ci": "n/a",
    }
    if len(a) > 1 and len(b) > 1 and (statistics.stdev(a) > 0 or statistics.stdev(b) > 0):
        # Both groups without spread (e.g. every network scoring the same few test items) would
        # give a zero-width interval: an interval that measured nothing, so none is printed.
        test = stats.ttest_ind(a, b, equal_var=False)
        low, high = test.confidence_interval(0.95)
        row["welch_95ci"] = f"[{low:+.4f}, {high:+.4f}]"
    return row


def all_labels(row: dict[str, Any]) -> bool:
    """A probe of the main comparison: trained on all the labels, the upstream frozen."""
    return row["train_proportion"] == 1.0 and not row["fine_tune"]


def proportion_text(proportion: float) -> str:
    return f"{proportion * 100:g} %"


def weighted_sum_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per family, task, probe (weighted sum, or the network fine-tuned with it) and share of the
    training labels: pretrained against random weights, and against the best surface baseline
    of any kind with the same share of labels (the papers' claim; plain features have nothing
    to fine-tune, so fine-tuned networks meet the baselines' weighted-sum probes)."""
    table = []
    families = dict.fromkeys(row["family"] for row in rows if row["kind"] != "baseline")
    probes = dict.fromkeys((row["task"], row["fine_tune"], row["train_proportion"]) for row in rows)
    for family in families:
        for task, fine_tune, proportion in probes:
            mine = [
                row
                for row in rows
                if row["family"] == family
                and row["layer"] == "weighted_sum"
                and (row["task"], row["fine_tune"], row["train_proportion"]) == (task, fine_tune, proportion)
            ]
            groups: dict[str, dict[Any, list[float]]] = {"pretrained": {}, "random": {}}
            for row in mine:
                groups[row["kind"]].setdefault(row["upstream_seed"], []).append(row["test"])
            if not groups["pretrained"] or not groups["random"]:
                continue  # a partial report (--report-only) before both groups have a probe
            comparison = compare(groups["pretrained"], groups["random"])
            entry = {
                "family": family,
                "task": task,
                "probe": "fine-tuned" if fine_tune else "weighted sum",
                "train proportion": proportion_text(proportion),
                "metric": mine[0]["metric"],
                **comparison,
            }
            best = best_baseline(rows, task, proportion)
            if best is not None:
                # The baseline has no pretraining seed: its probes are the unit.
                against = compare(groups["pretrained"], {best[0]: best[1]})
                entry.update(
                    {
                        "best baseline": f"{best[0]} {against['random']}",
                        "vs baseline": against["difference"],
                        "vs baseline 95ci": against["welch_95ci"],
                    }
                )
            else:
                entry.update({"best baseline": "n/a", "vs baseline": float("nan"), "vs baseline 95ci": "n/a"})
            table.append(entry)
    return table


def baseline_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every surface baseline on every task with all the labels (``probe_summary`` of their probes)."""
    return probe_summary([row for row in rows if row["kind"] == "baseline" and all_labels(row)])


def unconverged(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Probes whose best dev score came at their last evaluation: they may still have been improving."""
    return [
        f"{row['task']} / {row['upstream']} / {row['layer']}{' fine-tuned' if row['fine_tune'] else ''}"
        f"{'' if row['train_proportion'] == 1.0 else ', ' + proportion_text(row['train_proportion']) + ' of the labels'}"
        f" (probe seed {row['probe_seed']}): best step {row['best_step']} of {row['steps']}"
        for row in rows
        if not row["converged"]
    ]


def layer_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row["layer"] != "weighted_sum"]


def layer_weights_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Against every network probed layer by layer (first probe seed): its weighted sum's test
    value, the best single hidden state (chosen on dev) and the softmax weight the weighted sum
    learned for each hidden state; and the weighted sum's mean over every probe seed."""
    table = []
    for task, label in dict.fromkeys((row["task"], row["upstream"]) for row in layer_table(rows)):
        mine = [row for row in rows if (row["task"], row["upstream"]) == (task, label) and all_labels(row)]
        single = [row for row in mine if row["layer"] != "weighted_sum"]
        summed = [row for row in mine if row["layer"] == "weighted_sum"]
        if not summed:
            continue
        higher = single[0]["higher_is_better"]
        best = max(single, key=lambda row: row["dev"] if higher else -row["dev"])
        same_seed = next(row for row in summed if row["probe_seed"] == best["probe_seed"])
        weights = same_seed["layer_weights"]
        table.append(
            {
                "task": task,
                "upstream": label,
                "weighted sum test": same_seed["test"],
                "best layer (dev)": best["layer"],
                "its test": best["test"],
                "weighted sum - best layer": same_seed["test"] - best["test"],
                "layer weights (0 = input)": " ".join(f"{w:.2f}" for w in weights) if weights else "n/a",
                "weighted sum, all probe seeds": statistics.mean(row["test"] for row in summed),
            }
        )
    return table


def family_table(plan: StudyPlan, curves: dict[str, dict[str, Any]], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for upstream in plan.upstreams:
        curve = curves[upstream]  # the first run's
        model = build_upstream(upstream, str(plan.pretrain_dir(upstream) / "best.ckpt"))
        entry = {
            "upstream": upstream,
            "parameters": sum(p.numel() for p in model.encoder.parameters()),
            "updates": curve["total_steps"],
            "final held-out L1": curve["curve"][-1][1] if curve["curve"] else float("nan"),
            "beats copy at": curve["first_beaten"].get("copy"),
            "beats interpolation at": curve["first_beaten"].get("interpolation"),
        }
        for task in plan.tasks:
            values = [
                row["test"]
                for row in rows
                if row["family"] == upstream
                and row["task"] == task
                and row["kind"] == "pretrained"
                and row["layer"] == "weighted_sum"
                and all_labels(row)
            ]
            entry[f"{task} test"] = statistics.mean(values) if values else float("nan")
        table.append(entry)
    return table


def write_report(
    plan: StudyPlan,
    command: str,
    curves: dict[str, dict[str, Any]],
    rows: list[dict[str, Any]],
    wall_time: WallTime,
    pictures: Sequence[Path] = (),
    missing: Sequence[str] = (),
) -> Path:
    out = plan.outdir
    write_table(rows, out, "probes")
    (out / "curves.json").write_text(json.dumps(curves, indent=2) + "\n")
    plot_curves(curves, out / "learning_curves.png")
    layers = layer_table(rows)
    if layers:
        plot_layerwise(layers, out / "layerwise.png")
    families = family_table(plan, curves, rows)
    # Each run draws its own held-out masks (runner.seed), so each has its own predictor losses.
    crossing = [
        {
            "run": label,
            "updates": curve["total_steps"],
            "minutes": "not recorded" if curve.get("train_seconds") is None else round(curve["train_seconds"] / 60, 1),
            **{name: curve["first_beaten"][name] for name in PREDICTORS},
            "predictor losses": " / ".join(f"{curve['baselines'][name]:.3f}" for name in PREDICTORS),
        }
        for label, curve in curves.items()
    ]
    lines = [
        *report_header(
            "Pretraining study: pretrained against random weights of the same architecture and the surface features", command
        ),
        f"Pretraining corpus `{plan.pretrain_corpus.name}`, evaluation corpus `{plan.eval_corpus.name}`; "
        f"pretraining seeds {list(plan.pretrain_seeds) or RECIPE_SEED}, probe seeds {list(plan.probe_seeds)}, "
        f"random-weight seeds {list(plan.random_seeds)}; probe settings "
        f"`{' '.join(plan.probe_overrides)}`; pretraining overrides `{' '.join(plan.pretrain_overrides) or 'none'}`.",
        "",
        "## Learning curves",
        "",
        "Held-out masked L1 at every step checkpoint; grey: trivial predictors on the same held-out "
        "masks (the first run's). The table gives the first checkpoint below each predictor (None: "
        f"never) and the predictors' losses ({' / '.join(PREDICTORS)}) on the run's own masks.",
        "",
        "![learning curves](learning_curves.png)",
        "",
        markdown_table(crossing, list(crossing[0])),
        "",
        "## Probes: weighted sum of hidden states, test set",
        "",
        "Each network (a pretraining run, or random weights from one seed) is probed with every "
        "probe seed. Unit `networks`: one value per network, its probes averaged (both groups "
        "have two networks or more); unit `probes`: one value per probe, so with one pretrained "
        "network the interval covers probe-seed noise only, not the spread between pretraining "
        "runs. Mean +- sample standard deviation; difference of means with Welch's 95 % interval. "
        "`probe`: the learned weighted sum of the frozen network's hidden states, or the network "
        "fine-tuned with it (`--fine-tune`); `train proportion`: the share of the training utterances the "
        "probe was trained on (`--proportions`; the same utterances for every model).",
        "",
        markdown_table(weighted_sum_table(rows), WEIGHTED_SUM_COLUMNS),
        "",
        "`best baseline`: the surface features (below) with the best mean test value on the task "
        "with the same share of labels (their weighted-sum probe: plain features have nothing to "
        "fine-tune); `vs baseline`: pretrained minus it, with Welch's 95 % interval over probes.",
        "",
        "## Surface baselines: the same probes on the features the networks start from",
        "",
        "`fbank`: Kaldi fbank + deltas, no CMVN; `mel`: the networks' input features, per-utterance "
        "CMVN; `mel_raw`: the same without CMVN; `model_input`: the pretrained network's own input, R "
        "frames stacked to its frame rate, no encoder. Features normalised per utterance (`mel`, and "
        "`model_input` of a network fed with them) are not probed by pooled tasks: every utterance's "
        "mean is zero. `test SE`: the binomial standard error of one probe's test accuracy "
        "from its number of test items (frames or utterances; for frames a lower bound).",
        "",
        markdown_table(baseline_table(rows), BASELINE_COLUMNS),
        "",
    ]
    pictures = [path for path in pictures if path.is_file()]
    if pictures:
        lines += [
            "## t-SNE",
            "",
            f"`{TSNE_SUBSET}` of the evaluation corpus (at most {TSNE_UTTERANCES} utterances): each "
            f"utterance mean-pooled and coloured by speaker, and {TSNE_FRAMES:,} frames coloured by broad phone "
            "class; the average of all hidden states. Pictures only: the probes above measure.",
            "",
            *[f"![{path.stem}](tsne/{path.name})" for path in pictures],
            "",
        ]
    late = unconverged(rows)
    lines += [
        "## Convergence",
        "",
        f"{len(rows) - len(late)} of {len(rows)} probes stopped on a dev plateau (best dev step before their last step)."
        + (" **Not converged** (best dev score at the last evaluation; raise `runner.total_steps`):" if late else ""),
        "",
        *[f"- {entry}" for entry in late],
        "",
        "## The families at equal width, depth and updates",
        "",
        markdown_table(families, list(families[0])),
        "",
    ]
    if layers:
        lines += [
            "## Layer by layer (first probe seed; random: the first random-weight seed)",
            "",
            "![test metric against layer](layerwise.png)",
            "",
            "The weighted sum against the best hidden state alone (chosen on dev), both with the "
            "first probe seed, the weight the weighted sum learned for each hidden state, and the "
            "weighted sum's mean over all probe seeds:",
            "",
            markdown_table(layer_weights_table(rows), LAYER_WEIGHTS_COLUMNS),
            "",
            markdown_table(layers, ["task", "upstream", "layer", "metric", "dev", "test", "learned"]),
            "",
        ]
    lines += [
        "## Wall time",
        "",
        "Minutes spent in each part, summed over every command that built this folder "
        f"(`{WALL_TIME}`); pretraining also per run in the first table, from its checkpoints. "
        "Probes trained side by side (`--jobs`) each add their own minutes, so a part's sum can "
        "exceed the time it took on the clock."
        + (
            ""
            if wall_time.complete
            else " **Incomplete**: the folder held runs or probes before it counted wall time; their time is not in the sums."
        ),
        "",
        markdown_table(wall_time.table(), ["part", "minutes"]),
        "",
    ]
    if missing:
        lines += [
            f"**Partial report** (`--report-only`): {len(missing)} run(s) or probe(s) not finished yet, left out:",
            "",
            *[f"- {entry}" for entry in missing],
            "",
        ]
    return write_text_atomic(out / REPORT, "\n".join(lines))


def run_study(plan: StudyPlan, command: str) -> Path:
    check_inputs(plan)
    with own_outdir(plan.outdir):
        missing: list[str] = []
        check_pretraining(plan)
        # A folder with runs or probes but no count yet was made before the count existed.
        untimed = not (plan.outdir / WALL_TIME).exists() and any((plan.outdir / d).exists() for d in ("pretrain", "probes"))
        wall_time = WallTime(plan.outdir / WALL_TIME, complete=not untimed, counting=not plan.report_only)
        with wall_time.part("pretraining"):
            pretrained = pretrain_all(plan, missing)
        with wall_time.part("learning curves"):
            curves = {run.label: learning_curve(run.folder) for runs in pretrained.values() for run in runs}
        with wall_time.part("random-weight networks"):
            random = random_networks(plan, pretrained)
        rows = probe_all(plan, pretrained, random, missing, wall_time)
        pictures = tsne_plan(plan, pretrained, random) if plan.tsne else []
        if pictures and not plan.report_only:
            with wall_time.part("t-SNE pictures"):
                tsne_pictures(plan, pictures)
        return write_report(plan, command, curves, rows, wall_time, [path for *_, path in pictures], missing)


def parse_plan(argv: Sequence[str]) -> StudyPlan:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("-p", "--outdir", type=Path, required=True, help="output folder (pretraining runs, probes, report)")
    parser.add_argument("--pretrain-corpus", type=Path, required=True, help="LibriSpeech-layout corpus to pretrain on")
    parser.add_argument("--eval-corpus", type=Path, required=True, help="LibriSpeech-layout corpus with alignments to probe on")
    parser.add_argument("--recipe", type=Path, help="pretraining settings file (-c of run_pretrain.py)")
    parser.add_argument("--upstreams", nargs="+", default=["aalbert_3L", "mockingjay_3L"])
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="updates of every pretraining run")
    budget.add_argument("--minutes", type=float, help="wall-clock budget of the first run; the others get its updates")
    parser.add_argument("-d", "--tasks", nargs="+", default=list(DEFAULT_TASKS))
    parser.add_argument("--probe-seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--random-seeds", type=int, nargs="+", default=[11, 12, 13])
    parser.add_argument(
        "--pretrain-seeds",
        type=int,
        nargs="+",
        default=[],
        help="one pretraining run per seed (runner.seed; default: one run with the recipe's seed)",
    )
    add_override_option(
        parser,
        help=f"probe config overrides, added to the study's own ({' '.join(DEFAULT_PROBE_OVERRIDES)}): "
        "a key given here replaces its value there, the others stay (the report lists them all)",
    )
    add_override_option(
        parser, "--pretrain-override", help="pretraining setting overrides on top of --recipe, e.g. runner.cpu_bf16=false"
    )
    grid = parser.add_argument_group("the seed's grid (each adds probes; all are off by default)")
    grid.add_argument(
        "--proportions",
        type=float,
        nargs="+",
        default=[],
        metavar="P",
        help="shares of the training labels (0 < P < 1) to probe with besides all of them, e.g. 0.01 0.1",
    )
    grid.add_argument(
        "--fine-tune",
        nargs="+",
        default=[],
        metavar="TASK",
        help="tasks (of -d) whose networks are also fine-tuned with their probe, with every share of labels",
    )
    grid.add_argument(
        "--fine-tune-proportions",
        type=float,
        nargs="+",
        default=[],
        metavar="P",
        help="fine-tune with these shares only (1 = all the labels; each other share also in --proportions, "
        "where the baselines' probes are its comparison), e.g. 0.1: fine-tuning costs a forward and "
        "backward pass of the network per update",
    )
    grid.add_argument(
        "--tsne",
        action="store_true",
        help=f"t-SNE pictures of {TSNE_SUBSET} for the first pretrained and random networks and the baselines",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="probes to train side by side, each in its own process with its share of the threads "
        "(e.g. the number of cores: one probe keeps about one core busy); pretraining runs one at a time",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the report from what is finished (pretraining must be), training nothing",
    )
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1 or args.minutes is not None and not 0 < args.minutes < math.inf:
        parser.error("--steps must be >= 1 and --minutes a positive number")
    for option in ("--probe-seeds", "--random-seeds", "--pretrain-seeds", "--upstreams", "--tasks"):
        values = getattr(args, option[2:].replace("-", "_"))
        repeated = sorted({str(value) for value in values if values.count(value) > 1})
        if repeated:  # a repeated seed is the same run again: it would fake a spread and an interval
            parser.error(f"{option} {' '.join(map(str, values))}: {', '.join(repeated)} given twice; list each once")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give 1 or more probes at a time")
    for name in ("pretrain_corpus", "eval_corpus"):
        if not getattr(args, name).is_dir():
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: no such folder")
    proportions = sorted(set(args.proportions), reverse=True)
    if any(not 0 < proportion < 1 for proportion in proportions):
        parser.error(
            f"--proportions {' '.join(map(str, args.proportions))}: each proportion must be in (0, 1) "
            "(all the labels are always probed)"
        )
    stray = [task for task in args.fine_tune if task not in args.tasks]
    if stray:
        parser.error(f"--fine-tune {' '.join(stray)}: not among the probed tasks (-d {' '.join(args.tasks)}); add it to -d")
    fine_tune_proportions = sorted(set(args.fine_tune_proportions), reverse=True)
    if fine_tune_proportions and not args.fine_tune:
        parser.error("--fine-tune-proportions: nothing is fine-tuned; add --fine-tune TASK")
    unmatched = [str(p) for p in fine_tune_proportions if p != 1 and p not in proportions]
    if unmatched:
        parser.error(
            f"--fine-tune-proportions {' '.join(unmatched)}: give 1 (all the labels) or a share of --proportions "
            "(the baselines are probed with that share to compare with); add it to --proportions"
        )
    # The study's probe settings, each key once at the value that applies (the user's win).
    overrides = {item.partition("=")[0]: item for item in [*DEFAULT_PROBE_OVERRIDES, *args.override]}.values()
    return StudyPlan(
        outdir=args.outdir,
        pretrain_corpus=args.pretrain_corpus,
        eval_corpus=args.eval_corpus,
        recipe=args.recipe,
        upstreams=tuple(args.upstreams),
        steps=args.steps,
        minutes=args.minutes,
        tasks=tuple(args.tasks),
        probe_seeds=tuple(args.probe_seeds),
        random_seeds=tuple(args.random_seeds),
        probe_overrides=tuple(overrides),
        pretrain_overrides=tuple(args.pretrain_override),
        device=args.device,
        report_only=args.report_only,
        pretrain_seeds=tuple(args.pretrain_seeds),
        proportions=tuple(proportions),
        fine_tune_tasks=tuple(dict.fromkeys(args.fine_tune)),
        fine_tune_proportions=tuple(float(p) for p in fine_tune_proportions),
        tsne=args.tsne,
        jobs=args.jobs,
    )


def main(argv: Optional[Sequence[str]] = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    path = run_study(parse_plan(argv), "python -m analysis.study " + shlex.join(argv))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run_cli(main, memory_hint="lower the probes' batch size (-o runner.batch_size=N runner.eval_batch_size=N)")
