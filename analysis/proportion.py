"""Label-proportion sweep: the weighted-sum probe trained on growing shares of the training
utterances (``runner.train_proportion``), for one or more upstreams and tasks.

    python -m analysis.proportion -u fbank aalbert_3L:aalbert.ckpt -d phone_linear \\
        --proportions 0.001 0.01 0.1 1 -p result/proportion

Writes ``proportion.csv``/``proportion.json`` (one row per upstream, task and proportion,
with the number of utterances actually used: tiny shares keep one utterance per class at
least) and ``proportion.png`` (test metric against proportion, log x axis). Cells are
resumable and shared with the layer-wise command's weighted-sum cells at proportion 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import utility.openmp_wait  # noqa: F401  (first: OpenMP reads its wait policy when torch loads)

from downstream.subset import check_proportion
from utility.cli import ArgumentParser, run_cli

from .cells import (
    Cell, UpstreamChoice, add_probe_arguments, own_outdir, parse_upstreams, result_row, run_cells, settings_from_args,
)
from .plotting import plt, save_figure
from .tables import write_table

DEFAULT_PROPORTIONS = (0.001, 0.01, 0.1, 1.0)
DEFAULT_TASKS = ("phone_linear",)
PANEL_SIZE = (5.5, 4.0)  # inches per task panel; 100 dpi


def proportion_cells(tasks: Sequence[str], choice: UpstreamChoice, proportions: Sequence[float]) -> list[Cell]:
    return [Cell(task, choice, None, proportion=check_proportion(p)) for task in tasks for p in proportions]


def plot_proportions(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Test metric against the share of training utterances (log scale), one line per upstream."""
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    upstreams = list(dict.fromkeys(row["upstream"] for row in rows))
    figure, panels = plt.subplots(
        1, len(tasks), figsize=(PANEL_SIZE[0] * len(tasks), PANEL_SIZE[1]), squeeze=False, layout="constrained"
    )
    for panel, task in zip(panels[0], tasks):
        metric = next(row["metric"] for row in rows if row["task"] == task)
        for upstream in upstreams:
            points = sorted(
                (row["train_proportion"], row["test"]) for row in rows if row["task"] == task and row["upstream"] == upstream
            )
            if points:
                x, y = zip(*points)
                panel.plot(x, y, marker="o", label=upstream)
        panel.set_xscale("log")
        panel.set_xlabel("share of training utterances (log scale)")
        panel.set_ylabel(f"test {metric}")
        panel.set_title(f"{task}: weighted-sum probe")
        panel.legend(fontsize=8, loc="best")
    return save_figure(figure, path)


def proportion_rows(done: Sequence[tuple[Cell, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Table rows, upstreams in the order given, then by task and growing proportion."""
    rows = [result_row(cell, results) for cell, results in done]
    order = {name: index for index, name in enumerate(dict.fromkeys(row["upstream"] for row in rows))}
    return sorted(rows, key=lambda row: (order[row["upstream"]], row["task"], row["train_proportion"]))


def same_subsets(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per upstream and task whose proportions trained on the same number of
    utterances: each class keeps one utterance at least, so on a small corpus the smallest
    shares all give the same subset (one point of the curve drawn several times)."""
    groups: dict[tuple[str, str, int], list[float]] = {}
    for row in rows:
        groups.setdefault((row["upstream"], row["task"], row["train_utterances"]), []).append(row["train_proportion"])
    return [
        f"{task}, {upstream}: proportions {', '.join(f'{p:g}' for p in shares)} all trained on the same {count} "
        "utterances (every class keeps one utterance at least): one point, not a trend; use a larger corpus or "
        "larger proportions"
        for (upstream, task, count), shares in groups.items()
        if len(shares) > 1
    ]


def write_proportions(done: Sequence[tuple[Cell, dict[str, Any]]], outdir: Path) -> dict[str, Path]:
    rows = proportion_rows(done)
    for line in same_subsets(rows):
        print(f"warning: {line}", file=sys.stderr)
    csv_path, json_path = write_table(rows, outdir, "proportion")
    return {"csv": csv_path, "json": json_path, "plot": plot_proportions(rows, outdir / "proportion.png")}


def main(argv: Optional[list[str]] = None) -> dict[str, Path]:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_probe_arguments(parser, DEFAULT_TASKS)
    parser.add_argument("--proportions", nargs="+", type=float, default=list(DEFAULT_PROPORTIONS))
    args = parser.parse_args(argv)
    choices = parse_upstreams(args.upstreams)
    cells_root = args.outdir / "cells"
    with own_outdir(args.outdir):
        cells = lambda choice, _: proportion_cells(args.tasks, choice, args.proportions)
        done = run_cells(choices, cells, cells_root, settings_from_args(args))
        paths = write_proportions(done, args.outdir)
    print("\n".join(f"wrote {path}" for path in paths.values()))
    return paths


if __name__ == "__main__":
    run_cli(main, memory_hint="lower the batch size (-o runner.batch_size=N runner.eval_batch_size=N)")
