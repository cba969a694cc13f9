"""Pretraining ablation: which settings make masked acoustic modelling learn features that a
probe prefers to the surface features they are computed from?

    python scripts/pretraining_ablation.py -p result/ablation --pretrain-corpus PRETRAIN_ROOT \\
        --eval-corpus DEV_ROOT --steps 2000 --variants base span3 span3_raw span3_corpus

Each variant is ``aalbert_3L`` with ``pretrain/recipes/cpu_small.yaml`` plus the variant's
overrides (``VARIANTS``), pretrained for ``--steps`` updates on the pretraining corpus once per
``--pretrain-seeds`` seed in ``OUT/variants/<variant>/pretrain`` (resumable: rerun the same
command; a folder made with other settings is refused, naming the setting). Each run's
``best.ckpt`` (the learned weighted sum of its hidden states), random weights of each variant's
architecture (``--random-seeds``, default one network: a variant that changes the network
changes what random weights give too) and the surface baselines (``analysis/baselines.py``:
fbank, mel, mel_raw and each variant's own input) are probed on the
evaluation corpus with the study's protocol (probes stop on a dev plateau) in ``OUT/probes``;
``OUT/REPORT.md`` (``--report``, default ``ablation``) tables them with each run's held-out
masked L1 and where it beats the trivial predictors. ``--no-pretrain`` pretrains nothing and
probes the runs as they stand: a long run stopped to be continued later (``run_pretrain.py -e``)
can be probed at its ``--probe-updates`` checkpoints in between. ``--probe-updates 4000 8000`` also probes each
run's step checkpoints of those updates and plots probe accuracy against updates.

Choose a variant on a development corpus and report final numbers on another one: the
evaluation corpora of both should share no speaker with the pretraining corpus.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import utility.openmp_wait  # noqa: E402,F401  (first: OpenMP reads its wait policy when torch loads)

from analysis.baselines import baseline_choices, best_baseline, probes_with  # noqa: E402
from analysis.cells import Cell, ProbeSettings, UpstreamChoice, own_outdir, probe_summary, result_row, run_cell  # noqa: E402
from analysis.study import (  # noqa: E402
    DEFAULT_PROBE_OVERRIDES,
    PretrainedRun,
    StudyPlan,
    check_pretraining,
    learning_curve,
    pretrain_all,
    pretraining_overrides,
    random_networks,
    settings_of,
)
from analysis.plotting import plt, save_figure  # noqa: E402
from analysis.tables import markdown_table, report_header, write_table  # noqa: E402
from pretrain.baselines import PREDICTORS  # noqa: E402
from pretrain.settings import load_settings  # noqa: E402
from upstream import build_upstream  # noqa: E402
from utility.checkpoint_file import read_checkpoint_file  # noqa: E402
from utility.checkpoint_keeper import CheckpointKeeper  # noqa: E402
from utility.atomic_write import write_text_atomic  # noqa: E402
from utility.cli import ArgumentParser, add_override_option, run_cli  # noqa: E402

UPSTREAM = "aalbert_3L"
RECIPE = Path(__file__).resolve().parent.parent / "pretrain" / "recipes" / "cpu_small.yaml"


def wide_overrides(width: int) -> tuple[str, ...]:
    """Positions at 1/16 and ``width`` units, heads 64 wide, FFN 4x the width."""
    return (
        "model.encoder.position_scale=0.0625",
        f"model.encoder.hidden_size={width}",
        f"model.encoder.num_heads={width // 64}",
        f"model.encoder.intermediate_size={4 * width}",
    )


# name -> overrides on top of the recipe (R = 3, one stacked step masked per span, per-utterance CMVN).
VARIANTS: dict[str, tuple[str, ...]] = {
    "base": (),
    "span3": ("masking.span=3",),  # 3 consecutive stacked steps (90 ms) per span: interpolation no longer solves it
    "span3_raw": ("masking.span=3", "model.frontend.cmvn=false"),  # and no per-utterance CMVN: the spectral mean stays
    # Standardised with the training corpus's statistics instead: the mean stays, at unit scale.
    "span3_corpus": ("masking.span=3", "data.corpus_cmvn=true"),
    # The papers' framing: one frame per 10 ms, 7-frame spans; attention over whole utterances (15 s).
    "r1_span7_raw": (
        "model.encoder.downsample_rate=1",
        "masking.span=7",
        "model.frontend.cmvn=false",
        "model.encoder.max_frames=1500",
    ),
    # Five times the recipe's learning rate (2e-4, s3prl's for batch 32 at 768 wide): a 256-wide
    # network at batch 8 may take larger steps, and on a CPU progress is counted in updates.
    "base_lr1e3": ("optimizer.lr=1e-3",),
    "span3_corpus_lr1e3": ("masking.span=3", "data.corpus_cmvn=true", "optimizer.lr=1e-3"),
    # The input layer (upstream/config.py, EncoderConfig): positions at 1 / sqrt(256) of s3prl's
    # scale (the original Transformer's ratio), so the input representation is mostly the frame.
    "base_pos16": ("model.encoder.position_scale=0.0625",),
    "base_pos64": ("model.encoder.position_scale=0.015625",),  # a quarter of that again
    "span3_pos16": ("masking.span=3", "model.encoder.position_scale=0.0625"),
    # and no per-frame LayerNorm of the input representation (it removes each frame's level)
    "pos16_noln": ("model.encoder.position_scale=0.0625", "model.encoder.input_layer_norm=false"),
    # Width: at 256 units the input projection squeezes the 480-value stacked frame (3 x 160);
    # at 384 or more every hidden state can keep all of it; 768 is the papers' width.
    **{f"wide{width}_pos16": wide_overrides(width) for width in (384, 512, 768)},
}
DEFAULT_TASKS = ("phone_1hidden", "speaker_utterance")
ROW_COLUMNS = ["task", "upstream", "kind", "test", "test SE", "dev", "best step / steps"]


def plan_for(args: argparse.Namespace, variant: str) -> StudyPlan:
    """The study plan whose pretraining stage trains one variant (in OUT/variants/<variant>/pretrain)."""
    return StudyPlan(
        outdir=args.outdir / "variants" / variant,
        pretrain_corpus=args.pretrain_corpus,
        eval_corpus=args.eval_corpus,
        recipe=RECIPE,
        upstreams=(UPSTREAM,),
        steps=args.steps,
        minutes=None,
        tasks=tuple(args.tasks),
        probe_seeds=tuple(args.probe_seeds),
        random_seeds=tuple(args.random_seeds),
        probe_overrides=(),
        pretrain_overrides=(*VARIANTS[variant], *args.pretrain_override),
        device=args.device,
        pretrain_seeds=tuple(args.pretrain_seeds),
    )


def run(args: argparse.Namespace, command: str) -> Path:
    out: Path = args.outdir
    plans = {variant: plan_for(args, variant) for variant in args.variants}
    for plan in plans.values():
        check_pretraining(plan)
        check_probe_updates(plan, args.probe_updates)
    with own_outdir(out):
        curves, models, first_runs = {}, [], {}
        for variant, plan in plans.items():
            runs = standing_runs(plan) if args.no_pretrain else [(run, True) for run in pretrain_all(plan, [])[UPSTREAM]]
            for run, finished in runs:
                label = variant if run.first else f"{variant}_seed{run.seed}"
                curves[label] = learning_curve(run.folder)
                if run.first:
                    first_runs[variant] = run
                if finished:
                    models.append(("variant", label, UpstreamChoice(UPSTREAM, str(run.best), label)))
                models += [
                    ("variant", label, UpstreamChoice(UPSTREAM, str(path), f"{label}@{step}"))
                    for step, path in step_checkpoints(run.folder, args.probe_updates)
                ]
        # Named after the run (not "<run>@<updates>"): a run's checkpoints share its front end.
        networks = [(run_label, choice.ckpt) for _, run_label, choice in models]
        models += [("baseline", choice.label, choice) for choice in baseline_choices(networks)]
        # Random weights of each variant's architecture: a variant that changes the network (its
        # width, its input layer) changes what random weights give too, and only the difference
        # is pretraining's.
        for variant, run in first_runs.items():
            for seed, path in zip(args.random_seeds, random_networks(plans[variant], {UPSTREAM: [run]})[UPSTREAM]):
                label = f"{variant}_random{seed}"
                models.append(("random", label, UpstreamChoice(UPSTREAM, str(path), label)))
        rows = []
        for kind, run_label, choice in models:
            model = build_upstream(choice.name, choice.ckpt)
            updates = read_checkpoint_file(choice.ckpt)["metadata"]["step"] if kind == "variant" else None
            for probe_seed in args.probe_seeds:
                settings = ProbeSettings(
                    overrides=[f"data.root={args.eval_corpus}", *DEFAULT_PROBE_OVERRIDES, *args.override],
                    seed=probe_seed,
                    device=args.device,
                )
                for task in args.tasks:
                    if probes_with(model, task, settings.tasks_dir):
                        cell = Cell(task, choice)
                        results = run_cell(cell, out / "probes" / f"seed{probe_seed}", settings, model)
                        row = {**result_row(cell, results), "kind": kind, "run": run_label, "updates": updates}
                        rows.append({**row, "probe_seed": probe_seed})
            del model
        write_table(rows, out, args.report)
        kinds = {row["upstream"]: row["kind"] for row in rows}
        pretraining = [
            {
                "run": label,
                "overrides": " ".join(VARIANTS[label.split("_seed")[0]]) or "(the recipe)",
                "updates": curve["total_steps"]
                if not curve["curve"] or curve["curve"][-1][0] == curve["total_steps"]
                else f"{curve['curve'][-1][0]} of {curve['total_steps']} (unfinished)",
                "final held-out L1": curve["curve"][-1][1] if curve["curve"] else float("nan"),
                **{f"beats {name} at": curve["first_beaten"][name] for name in ("copy", "interpolation")},
                "predictor losses": " / ".join(f"{curve['baselines'][name]:.3f}" for name in PREDICTORS),
            }
            for label, curve in curves.items()
        ]
        lines = [
            *report_header("Pretraining ablation: which settings beat the input features", command),
            f"`{UPSTREAM}` with `{RECIPE.relative_to(RECIPE.parents[2])}`; pretraining corpus "
            f"`{args.pretrain_corpus.name}`, evaluation corpus `{args.eval_corpus.name}`, probe seeds "
            f"{list(args.probe_seeds)}.",
            "",
            "## Pretraining",
            "",
            f"Held-out masked L1 (each run's own targets and masks) and the predictors ({' / '.join(PREDICTORS)}).",
            "",
            markdown_table(pretraining, list(pretraining[0])),
            "",
            "## Probes (weighted sum of hidden states), test set",
            "",
            "Test mean +- sd over probe seeds; `test SE`: one probe's binomial standard error from its test items; "
            "kind `random`: the variant's architecture with random weights (`--random-seeds`).",
            "",
            markdown_table([{**row, "kind": kinds[row["upstream"]]} for row in probe_summary(rows)], ROW_COLUMNS),
            "",
        ]
        if args.probe_updates:
            plot_against_updates(rows, out / f"{args.report}_updates.png")
            lines += [
                "## Probes against updates",
                "",
                "Each run's step checkpoints (`--probe-updates`) and its best checkpoint, probed alike; "
                "dashed: the best surface baseline of the task.",
                "",
                f"![test against updates]({args.report}_updates.png)",
                "",
            ]
        return write_text_atomic(out / f"{args.report}.md", "\n".join(lines))


def standing_runs(plan: StudyPlan) -> list[tuple[PretrainedRun, bool]]:
    """``--no-pretrain``: every run of ``plan`` as it stands (begun, perhaps not finished; e.g.
    a long run stopped to be continued later with ``run_pretrain.py -e``), and whether it is
    finished."""
    runs = []
    for index, (_, folder) in enumerate(plan.pretrain_runs(UPSTREAM)):
        kept = CheckpointKeeper(folder).step_checkpoints()
        if not kept:
            raise ValueError(
                f"--no-pretrain: {folder} holds no pretraining checkpoint yet; pretrain it first (without --no-pretrain)"
            )
        settings = settings_of(folder)
        run = PretrainedRun(UPSTREAM, settings.runner.seed, folder, first=index == 0)
        runs.append((run, kept[-1][0] >= settings.runner.total_steps))
    return runs


def check_probe_updates(plan: StudyPlan, updates: Sequence[int]) -> None:
    """Refuse, before anything is pretrained, an update no run of ``plan`` will keep a checkpoint of."""
    settings = load_settings(UPSTREAM, plan.recipe, pretraining_overrides(plan, None, plan.steps))
    save_step = settings.runner.save_step
    never = [n for n in updates if not 0 < n <= plan.steps or n % save_step]
    if never:
        raise ValueError(
            f"--probe-updates {' '.join(map(str, never))}: the runs keep a checkpoint every {save_step} updates up to "
            f"{plan.steps} (runner.save_step); choose among those"
        )


def step_checkpoints(folder: Path, steps: Sequence[int]) -> list[tuple[int, Path]]:
    """(step, path) of the run's kept step checkpoints at ``steps``; a step not kept is refused."""
    kept = dict(CheckpointKeeper(folder).step_checkpoints())
    absent = [step for step in steps if step not in kept]
    if absent:
        raise ValueError(
            f"--probe-updates {' '.join(map(str, absent))}: {folder} keeps no checkpoint of that update "
            f"(kept: {' '.join(map(str, kept)) or 'none'}); choose among them (runner.save_step sets which are written)"
        )
    return [(step, kept[step]) for step in steps]


def plot_against_updates(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """One panel per task: the mean test value over probe seeds of every run's checkpoints
    against their updates, and the best surface baseline as a dashed line."""
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    figure, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), layout="constrained", squeeze=False)
    for axis, task in zip(axes[0], tasks):
        mine = [row for row in rows if row["task"] == task]
        for index, run in enumerate(dict.fromkeys(row["run"] for row in mine if row["kind"] == "variant")):
            points: dict[int, list[float]] = {}
            for row in mine:
                if row["run"] == run:
                    points.setdefault(row["updates"], []).append(row["test"])
            steps = sorted(points)
            axis.plot(steps, [statistics.mean(points[s]) for s in steps], marker="o", color=f"C{index}", label=run)
        best = best_baseline(mine, task)
        if best is not None:
            axis.axhline(statistics.mean(best[1]), color="grey", linestyle="--", label=f"{best[0]} (best baseline)")
        axis.set_title(task)
        axis.set_xlabel("pretraining updates")
        axis.set_ylabel(f"test {mine[0]['metric']}")
        axis.legend(fontsize=8)
    return save_figure(figure, path)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-p", "--outdir", type=Path, required=True, help="output folder (pretraining runs, probes, tables)")
    parser.add_argument("--pretrain-corpus", type=Path, required=True, help="LibriSpeech-layout corpus to pretrain on")
    parser.add_argument("--eval-corpus", type=Path, required=True, help="LibriSpeech-layout corpus with alignments to probe on")
    parser.add_argument("--steps", type=int, default=2000, help="updates of every variant")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("-d", "--tasks", nargs="+", default=list(DEFAULT_TASKS))
    parser.add_argument("--probe-seeds", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--pretrain-seeds", type=int, nargs="+", default=[1337], help="runner.seed of each pretraining run of every variant"
    )
    parser.add_argument(
        "--random-seeds",
        type=int,
        nargs="*",
        default=[11],
        help="random-weight networks of each variant's architecture, probed beside it (none: the option alone)",
    )
    parser.add_argument(
        "--probe-updates",
        type=int,
        nargs="+",
        default=[],
        metavar="N",
        help="also probe each run's checkpoint after N updates (a multiple of runner.save_step): probe accuracy against updates",
    )
    parser.add_argument(
        "--no-pretrain",
        action="store_true",
        help="pretrain nothing: probe the runs as they stand (their --probe-updates checkpoints; best.ckpt once finished)",
    )
    parser.add_argument("--report", default="ablation", help="name of the report and tables in OUT (REPORT.md, .csv, .json)")
    parser.add_argument(
        "--pretrain-override", nargs="+", default=[], metavar="KEY=VALUE", help="pretraining setting for every variant"
    )
    add_override_option(parser, help="task config override for every probe, e.g. -o runner.eval_step=200")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    repeatable = (
        ("--variants", args.variants),
        ("--probe-seeds", args.probe_seeds),
        ("--pretrain-seeds", args.pretrain_seeds),
        ("--random-seeds", args.random_seeds),
        ("--probe-updates", args.probe_updates),
    )
    for name, values in (*repeatable, ("-d", args.tasks)):
        if len(set(values)) != len(values):
            raise ValueError(f"{name} lists a value twice: {values}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> Path:
    command = "python scripts/pretraining_ablation.py " + " ".join(shlex.quote(arg) for arg in (argv or sys.argv[1:]))
    return run(parse_args(argv), command)


if __name__ == "__main__":
    run_cli(main)
