"""Layer-wise probing: the same probe on every hidden state alone, and on their learned
weighted sum, for one or more upstreams and tasks.

    python -m analysis.layerwise -u fbank aalbert_3L:aalbert.ckpt \\
        -d phone_linear speaker_utterance -p result/layerwise

Writes ``results.csv``/``results.json`` (one row per upstream, task and layer; the weighted
sum is layer ``weighted_sum``), ``layerwise.png`` (test metric against layer, one line per
upstream) and ``layer_weights.png`` (the weighted-sum probes' learned weights, for upstreams
with more than one hidden state). Each probe is a resumable cell under ``OUTDIR/cells``; the
upstream runs once per utterance (cached).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional, Sequence

import utility.openmp_wait  # noqa: F401  (first: OpenMP reads its wait policy when torch loads)

import numpy as np

from utility.cli import ArgumentParser, run_cli

from .cells import (
    Cell,
    UpstreamChoice,
    add_probe_arguments,
    learned_layer_weights,
    own_outdir,
    parse_upstreams,
    result_row,
    run_cells,
    settings_from_args,
)
from .plotting import plt, save_figure
from .tables import write_table

PANEL_SIZE = (5.5, 4.0)  # inches per task panel; 100 dpi
DEFAULT_TASKS = ("phone_linear", "speaker_utterance")


def layer_cells(tasks: Sequence[str], choice: UpstreamChoice, num_hidden_states: int) -> list[Cell]:
    """For each task: the weighted sum, then every hidden state alone (0 = input features)."""
    return [Cell(task, choice, layer) for task in tasks for layer in [None, *range(num_hidden_states)]]


def layer_index(row: dict[str, Any]) -> Optional[int]:
    return None if row["layer"] == "weighted_sum" else int(row["layer"].removeprefix("layer_"))


def plot_layerwise(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Test metric against hidden state, one line per upstream and a dashed line at the level
    of its weighted-sum probe; one panel per task."""
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    upstreams = list(dict.fromkeys(row["upstream"] for row in rows))
    figure, panels = plt.subplots(
        1, len(tasks), figsize=(PANEL_SIZE[0] * len(tasks), PANEL_SIZE[1]), squeeze=False, layout="constrained"
    )
    colours = plt.get_cmap("tab10")
    for panel, task in zip(panels[0], tasks):
        metric = next(row["metric"] for row in rows if row["task"] == task)
        for index, upstream in enumerate(upstreams):
            mine = [row for row in rows if row["task"] == task and row["upstream"] == upstream]
            layers = sorted((layer_index(row), row["test"]) for row in mine if layer_index(row) is not None)
            colour = colours(index % colours.N)
            if layers:
                x, y = zip(*layers)
                panel.plot(x, y, marker="o", color=colour, label=upstream)
            for row in mine:
                if layer_index(row) is None:
                    panel.axhline(row["test"], color=colour, linestyle="--", linewidth=1, label=f"{upstream}, weighted sum")
        panel.set_xlabel("hidden state (0 = input features, N = last layer)")
        panel.set_ylabel(f"test {metric}")
        panel.set_title(task)
        panel.xaxis.get_major_locator().set_params(integer=True)
        panel.legend(fontsize=8, loc="best")
    return save_figure(figure, path)


def plot_layer_weights(weights: dict[tuple[str, str], list[float]], path: Path) -> Path:
    """Bars of the softmax weight each hidden state got in the weighted-sum probe; one panel
    per task, one bar group per upstream. ``weights``: (task, upstream) -> weights."""
    tasks = list(dict.fromkeys(task for task, _ in weights))
    upstreams = list(dict.fromkeys(upstream for _, upstream in weights))
    figure, panels = plt.subplots(
        1, len(tasks), figsize=(PANEL_SIZE[0] * len(tasks), PANEL_SIZE[1]), squeeze=False, layout="constrained"
    )
    colours = plt.get_cmap("tab10")
    width = 0.8 / len(upstreams)
    for panel, task in zip(panels[0], tasks):
        for index, upstream in enumerate(upstreams):
            values = weights.get((task, upstream))
            if values is None:
                continue
            x = np.arange(len(values)) + (index - (len(upstreams) - 1) / 2) * width
            panel.bar(x, values, width=width, color=colours(index % colours.N), label=upstream)
        panel.set_xlabel("hidden state (0 = input features, N = last layer)")
        panel.set_ylabel("learned weight (softmax)")
        panel.set_title(f"{task}: weighted-sum probe")
        panel.xaxis.get_major_locator().set_params(integer=True)
        panel.legend(fontsize=8, loc="best")
    return save_figure(figure, path)


def write_layerwise(done: Sequence[tuple[Cell, dict[str, Any]]], cells_root: Path, outdir: Path) -> dict[str, Path]:
    """Tables and both plots from finished layer cells."""
    rows = [result_row(cell, results) for cell, results in done]
    csv_path, json_path = write_table(rows, outdir, "results")
    # A single hidden state (feature baselines) always gets weight 1: nothing to show.
    learned = {
        (cell.task, cell.upstream.label): learned_layer_weights(cell, cells_root) for cell, _ in done if cell.layer is None
    }
    weights = {key: values for key, values in learned.items() if len(values) > 1}
    paths = {"csv": csv_path, "json": json_path, "layerwise": plot_layerwise(rows, outdir / "layerwise.png")}
    if weights:
        paths["layer_weights"] = plot_layer_weights(weights, outdir / "layer_weights.png")
    return paths


def main(argv: Optional[list[str]] = None) -> dict[str, Path]:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_probe_arguments(parser, DEFAULT_TASKS)
    args = parser.parse_args(argv)
    choices = parse_upstreams(args.upstreams)
    cells_root = args.outdir / "cells"
    with own_outdir(args.outdir):
        cells = lambda choice, model: layer_cells(args.tasks, choice, model.num_hidden_states)
        done = run_cells(choices, cells, cells_root, settings_from_args(args))
        paths = write_layerwise(done, cells_root, args.outdir)
    print("\n".join(f"wrote {path}" for path in paths.values()))
    return paths


if __name__ == "__main__":
    run_cli(main, memory_hint="lower the batch size (-o runner.batch_size=N runner.eval_batch_size=N)")
