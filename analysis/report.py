"""Comparison report: several upstreams, the chosen probes, one Markdown file.

    python -m analysis.report -u fbank aalbert_3L:aalbert.ckpt random=aalbert_3L \\
        -d phone_linear speaker_utterance -p result/report -o data.root=/data/LibriSpeech

For every upstream: parameter count and extraction speed, then the stages named by
``--stages``: every task's probe on the learned weighted sum of hidden states
(``weighted_sum``), one probe per hidden state with plots (``layerwise``), the label-proportion
sweep on ``--proportion-task`` (``proportion``), and probes with the upstream trained too
(``finetune``, off by default).

With a network among the upstreams, the surface baselines of ``analysis/baselines.py`` are
added (``--no-baselines``: not): fbank, mel, mel_raw and, for each Transformer given with a
checkpoint, its own input (``model_input``), each unless listed under its label. They get the
weighted-sum probes and the proportion sweep (one hidden state: no layers, nothing to
fine-tune), and the report gives each network's test value minus the best baseline's. A task
that pools over time does not probe features normalised per utterance (every utterance's mean
is zero): those cells are skipped and named, for every upstream.
Writes ``OUTDIR/report.md`` with its tables and plots next to it. Every probe is a resumable
cell under ``OUTDIR/cells``: run the same command again after an interruption and finished
cells are read, not recomputed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import utility.openmp_wait  # noqa: F401  (first: OpenMP reads its wait policy when torch loads)

import torch
from tqdm import tqdm

from upstream import Upstream, read_audio
from upstream.audio import SAMPLE_RATE
from utility.cli import ArgumentParser, run_cli
from corpora.index import find_utterances
from corpora.root import DEMO_ROOT

from .baselines import best_baseline, is_baseline, missing_baselines, probes_with
from .cells import (
    Cell,
    UpstreamChoice,
    add_probe_arguments,
    corpus_root,
    override_list,
    own_outdir,
    parse_upstreams,
    result_row,
    run_cells,
    settings_from_args,
)
from .layerwise import DEFAULT_TASKS, layer_cells, write_layerwise
from .proportion import DEFAULT_PROPORTIONS, proportion_cells, proportion_rows, write_proportions
from .tables import markdown_table, report_header

REPORT = "report.md"
STAGES = ("weighted_sum", "layerwise", "proportion", "finetune")
DEFAULT_STAGES = ("weighted_sum", "layerwise", "proportion")
BASELINE_STAGES = ("weighted_sum", "proportion")  # of the added baselines: one hidden state, nothing to train
SPEED_SUBSET = "train-clean-100"


def measure_upstream(choice: UpstreamChoice, root: Path, num_utterances: int, seed: int) -> dict[str, Any]:
    """Parameter count, and seconds of extraction per minute of audio over the first
    ``num_utterances`` utterances of the training subset (on the CPU, one at a time, after a
    warm-up)."""
    model = choice.build(seed)
    utterances = find_utterances(root, [SPEED_SUBSET], progress=False)[:num_utterances]
    if not utterances:
        raise FileNotFoundError(f"no utterances in {root / SPEED_SUBSET} to time extraction on")
    wavs = [read_audio(utt.path) for utt in utterances]
    seconds = 0.0
    with torch.inference_mode():
        model([wavs[0]])  # warm-up: first-call allocations are not extraction speed
        for wav in tqdm(wavs, desc=f"timing {choice.label}", leave=False):
            started = time.perf_counter()
            model([wav])
            seconds += time.perf_counter() - started
    audio_minutes = sum(wav.numel() for wav in wavs) / SAMPLE_RATE / 60
    return {
        "upstream": choice.label,
        "checkpoint": choice.ckpt or "(none)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden_states": model.num_hidden_states,
        "seconds_per_audio_minute": seconds / audio_minutes,
        "timed_audio_seconds": audio_minutes * 60,
        "threads": torch.get_num_threads(),
    }


def report_cells(
    choice: UpstreamChoice,
    num_hidden_states: int,
    tasks: Sequence[str],
    proportion_task: Optional[str],
    proportions: Sequence[float],
    stages: Sequence[str],
) -> list[Cell]:
    """The cells of the chosen stages (``proportion_task`` None: no sweep); shared cells run
    once (the weighted-sum cell is also a layer-wise cell and the proportion-1 cell of the
    sweep). Feature baselines get no fine-tuned probes: they have nothing to train."""
    cells = []
    if "weighted_sum" in stages:
        cells += [Cell(task, choice) for task in tasks]
    if "layerwise" in stages:
        cells += layer_cells(tasks, choice, num_hidden_states)
    if "proportion" in stages and proportion_task is not None:
        cells += proportion_cells([proportion_task], choice, proportions)
    if "finetune" in stages and num_hidden_states > 1:
        cells += [Cell(task, choice, None, fine_tune=True) for task in tasks]
    return list(dict.fromkeys(cells))


def layer_summary(layer_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task and upstream: the best single hidden state on dev, against the last one and
    the weighted sum (the claim to check: inner layers may hold more than the last)."""
    summary = []
    for key in dict.fromkeys((row["task"], row["upstream"]) for row in layer_rows):
        mine = [row for row in layer_rows if (row["task"], row["upstream"]) == key]
        single = [row for row in mine if row["layer"] != "weighted_sum"]
        best = max(single, key=lambda row: row["dev"] if row["higher_is_better"] else -row["dev"])
        last = max(single, key=lambda row: int(row["layer"].removeprefix("layer_")))
        weighted = next(row for row in mine if row["layer"] == "weighted_sum")
        summary.append(
            {
                "task": key[0],
                "upstream": key[1],
                "metric": best["metric"],
                "best layer (dev)": best["layer"],
                "its test": best["test"],
                "last layer test": last["test"],
                "weighted sum test": weighted["test"],
            }
        )
    return summary


def against_baselines(weighted: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Weighted-sum rows (with ``kind``) -> per task and network: its test value minus that of
    the task's best baseline (``best_baseline``); tasks without a baseline are left out."""
    table = []
    for task in dict.fromkeys(row["task"] for row in weighted):
        best = best_baseline(weighted, task)
        if best is None:
            continue
        name, values = best
        baseline = statistics.mean(values)
        for row in weighted:
            if row["task"] == task and row["kind"] == "network":
                table.append(
                    {
                        "task": task,
                        "network": row["upstream"],
                        "metric": row["metric"],
                        "test": row["test"],
                        "best baseline": name,
                        "baseline test": baseline,
                        "network - baseline": row["test"] - baseline,
                    }
                )
    return table


def write_report(
    command: str,
    args: argparse.Namespace,
    facts: Sequence[dict[str, Any]],
    done: Sequence[tuple[Cell, dict[str, Any]]],
    skipped: Sequence[tuple[str, str]] = (),
) -> Path:
    """``skipped``: (upstream, task) pairs not probed (``probes_with``)."""
    outdir: Path = args.outdir
    frozen = [(c, r) for c, r in done if c.proportion == 1.0 and not c.fine_tune]
    # Upstreams probed layer by layer (not the added baselines) on a task.
    layered = {(c.task, c.upstream) for c, _ in frozen if c.layer is not None}
    layer_done = [(c, r) for c, r in frozen if (c.task, c.upstream) in layered]
    sweep_done = [(c, r) for c, r in done if c.task == args.proportion_task and c.layer is None and not c.fine_tune]
    tuned = [result_row(c, r) for c, r in done if c.fine_tune]
    weighted = [
        {**result_row(c, r), "kind": "baseline" if is_baseline(c.upstream) else "network"} for c, r in frozen if c.layer is None
    ]
    layers = [result_row(c, r) for c, r in layer_done]
    facts = [{**row, "seconds_per_audio_minute": round(row["seconds_per_audio_minute"], 3)} for row in facts]
    lines = [
        *report_header("Upstream comparison", command),
        f"Corpus: `{corpus_root(args) or 'demo corpus (data/demo)'}`; seed {args.seed}; "
        f"task config overrides: `{' '.join(override_list(args)) or 'none'}`.",
        "Metrics: dev selects the checkpoint, test is reported with it (see each task's README).",
        "",
        "## Upstreams",
        "",
        "Extraction speed: seconds of computation per minute of audio, one utterance at a time, "
        f"on {facts[0]['timed_audio_seconds']:.0f} s of audio per upstream "
        f"on the CPU with {facts[0]['threads']} threads (shared with other work: a rough guide).",
        "",
        markdown_table(facts, ["upstream", "checkpoint", "parameters", "hidden_states", "seconds_per_audio_minute"]),
        "",
    ]
    if skipped:
        lines += [
            "Not probed: "
            + ", ".join(f"`{upstream}` on {task}" for upstream, task in skipped)
            + " (the task pools over time, and features normalised per utterance have the same mean, zero, in "
            "every utterance: no probe can tell them apart).",
            "",
        ]
    if "weighted_sum" in args.stages:
        lines += [
            "## Probes on the learned weighted sum of hidden states",
            "",
            markdown_table(weighted, ["task", "upstream", "kind", "metric", "dev", "test", "train_utterances", "learned"]),
            "",
            "`kind`: `network`, or `baseline` for plain features (fbank, mel, mel_raw, a network's own input "
            "`model_input`; see `analysis/baselines.py`). `learned`: false when a classification probe's best dev "
            "cross-entropy stayed above 97 % of chance (ln of the number of classes): it did not train, so its "
            "score says nothing about the features.",
            "",
        ]
        margins = against_baselines(weighted)
        if margins:
            lines += [
                "## Networks against the best surface baseline",
                "",
                "Per task, each network's test value minus that of the baseline with the best test value "
                "(positive: the network is higher; for a metric where lower is better, negative is better).",
                "",
                markdown_table(
                    margins,
                    ["task", "network", "metric", "test", "best baseline", "baseline test", "network - baseline"],
                ),
                "",
            ]
    if tuned:
        lines += [
            "## Fine-tuned probes (upstream trained too)",
            "",
            markdown_table(tuned, ["task", "upstream", "metric", "dev", "test"]),
            "",
        ]
    if "layerwise" in args.stages:
        pictures = write_layerwise(layer_done, outdir / "cells", outdir)
        lines += [
            "## Layer-wise probes",
            "",
            "Each hidden state alone (0 = the input features), dashed: the weighted sum.",
            "",
            "![test metric against layer](layerwise.png)",
            "",
            *(["![learned layer weights](layer_weights.png)", ""] if "layer_weights" in pictures else []),
            markdown_table(
                layer_summary(layers),
                ["task", "upstream", "metric", "best layer (dev)", "its test", "last layer test", "weighted sum test"],
            ),
            "",
            markdown_table(layers, ["task", "upstream", "layer", "metric", "dev", "test"]),
            "",
        ]
    if "proportion" in args.stages:
        write_proportions(sweep_done, outdir)
        lines += [
            f"## Label-proportion sweep ({args.proportion_task})",
            "",
            "![test metric against proportion of training labels](proportion.png)",
            "",
            markdown_table(
                proportion_rows(sweep_done), ["upstream", "train_proportion", "train_utterances", "metric", "dev", "test"]
            ),
            "",
        ]
    path = outdir / REPORT
    path.write_text("\n".join(lines))
    return path


def main(argv: Optional[list[str]] = None) -> Path:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_probe_arguments(parser, DEFAULT_TASKS)
    parser.add_argument("--proportions", nargs="+", type=float, default=list(DEFAULT_PROPORTIONS))
    parser.add_argument("--proportion-task", help="task of the proportion sweep (default: the first of -d)")
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=list(DEFAULT_STAGES),
        help=f"what to run and report (default: {' '.join(DEFAULT_STAGES)})",
    )
    parser.add_argument("--speed-utterances", type=int, default=5, help="utterances timed per upstream")
    parser.add_argument(
        "--no-baselines",
        dest="baselines",
        action="store_false",
        help="do not add the surface baselines (fbank, mel, mel_raw, each network's model_input) to -u",
    )
    args = parser.parse_args(argv)
    args.proportion_task = args.proportion_task or args.tasks[0]
    if args.speed_utterances < 1:
        parser.error("--speed-utterances must be at least 1")
    choices = parse_upstreams(args.upstreams)
    added = missing_baselines(choices) if args.baselines else []
    root = Path(corpus_root(args) or DEMO_ROOT)
    settings = settings_from_args(args)
    skipped: list[tuple[str, str]] = []

    def cells_for(choice: UpstreamChoice, model: Upstream) -> list[Cell]:
        stages = [stage for stage in args.stages if choice not in added or stage in BASELINE_STAGES]
        sweep = [args.proportion_task] if "proportion" in stages else []
        readable = {task: probes_with(model, task, settings.tasks_dir) for task in [*args.tasks, *sweep]}
        skipped.extend((choice.label, task) for task, can in readable.items() if not can)
        tasks = [task for task in args.tasks if readable[task]]
        sweep_task = args.proportion_task if sweep and readable[args.proportion_task] else None
        return report_cells(choice, model.num_hidden_states, tasks, sweep_task, args.proportions, stages)

    with own_outdir(args.outdir):
        facts = [measure_upstream(choice, root, args.speed_utterances, args.seed) for choice in [*choices, *added]]
        (args.outdir / "upstreams.json").write_text(json.dumps(facts, indent=2) + "\n")
        done = run_cells([*choices, *added], cells_for, args.outdir / "cells", settings)
        path = write_report("python -m analysis.report " + shlex.join(argv), args, facts, done, skipped)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run_cli(main, memory_hint="lower the batch size (-o runner.batch_size=N runner.eval_batch_size=N)")
