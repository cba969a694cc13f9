"""Plots of the pretraining study: probe accuracy against pretraining updates, and the held-out
masked L1 of a pretraining run against its trivial predictors.

    python scripts/plot_pretraining_study.py --report result/study/report \\
        --runs result/study/checkpoints/quick_lr2e-4 result/study/checkpoints/recipe_aalbert_3L \\
        -o docs/results/pretraining_study

Upstream labels of the report name what each probe read: ``random_sN`` (random weights, seed
N), ``<run>_<updates>`` (a checkpoint of pretraining run <run> after <updates> updates), or a
baseline (``fbank``, ``mel``). Random weights are drawn at 0 updates, with the spread of the
seeds as a band; baselines as horizontal lines.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from analysis.plotting import plt, save_figure  # noqa: E402

CHECKPOINT_LABEL = re.compile(r"^(?P<run>[a-z]+)_(?P<updates>\d+)$")
HELD_OUT = re.compile(r"step (\d+): held-out masked L1 ([\d.]+)")
TRIVIAL = re.compile(r"held-out masked L1 of trivial predictors: (.*)")


def weighted_sum_results(report: Path) -> dict[tuple[str, str], dict]:
    """(task, upstream label) -> results.json of its weighted-sum cell."""
    found = {}
    for path in sorted((report / "cells").glob("*/*/weighted_sum/results.json")):
        found[(path.parts[-4], path.parts[-3])] = json.loads(path.read_text())
    return found


def plot_learning_curves(results: dict[tuple[str, str], dict], path: Path) -> Path:
    tasks = sorted({task for task, _ in results})
    figure, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    for panel, task in zip(axes[0], tasks):
        mine = {label: r for (t, label), r in results.items() if t == task}
        metric = next(iter(mine.values()))["metric"]
        runs: dict[str, list[tuple[int, float]]] = {}
        for label, r in mine.items():
            match = CHECKPOINT_LABEL.match(label)
            if match and not label.startswith("random"):
                runs.setdefault(match["run"], []).append((int(match["updates"]), r["test"][metric]))
        random = [r["test"][metric] for label, r in mine.items() if label.startswith("random")]
        if random:
            mean, low, high = statistics.mean(random), min(random), max(random)
            panel.errorbar(
                [0],
                [mean],
                yerr=[[mean - low], [high - mean]],
                fmt="s",
                color="black",
                capsize=4,
                label=f"random weights ({len(random)} seeds, min-max)",
            )
        for index, (run, points) in enumerate(sorted(runs.items())):
            points.sort()
            panel.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=f"C{index}", label=f"pretrained ({run})")
        for index, name in enumerate(("fbank", "mel")):
            if name in mine:
                panel.axhline(mine[name]["test"][metric], linestyle="--", color=f"C{index + 4}", label=name)
        panel.set_title(task)
        panel.set_xlabel("pretraining updates (batch 8)")
        panel.set_ylabel(f"test {metric} (weighted sum)")
        panel.legend(fontsize=7)
    return save_figure(figure, path)


def plot_held_out(runs: list[Path], path: Path) -> Path:
    figure, panel = plt.subplots(figsize=(6.5, 4.2))
    drawn = False
    for index, run in enumerate(runs):
        text = (run / "train.log").read_text()
        points = sorted({(int(step), float(value)) for step, value in HELD_OUT.findall(text)})
        panel.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=f"C{index}", label=f"model ({run.name})")
        trivial = TRIVIAL.search(text)
        if trivial and not drawn:  # the same held-out set and masks for every run on this corpus
            drawn = True
            for style, item in zip((":", "-.", "--"), trivial.group(1).split(", ")):
                name, value = item.rsplit(" ", 1)
                panel.axhline(float(value), linestyle=style, color="grey", label=f"trivial: {name}")
    panel.set_xlabel("pretraining updates (batch 8)")
    panel.set_ylabel("held-out masked L1")
    panel.legend(fontsize=7)
    return save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--report", type=Path, required=True, help="the analysis.report output folder (-p)")
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="pretraining experiment folders (their train.log)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the pictures")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    print(plot_learning_curves(weighted_sum_results(args.report), args.output / "learning_curves.png"))
    if args.runs:
        print(plot_held_out(args.runs, args.output / "held_out_l1.png"))


if __name__ == "__main__":
    main()
