"""Probe what an upstream's representations hold: train, evaluate or apply a downstream task.

    python run_downstream.py -u fbank -d speaker_utterance             # train on the demo data (~10 s)
    python run_downstream.py -m evaluate -e result/downstream/speaker_utterance_fbank -t dev test
    python run_downstream.py -m inference -e result/downstream/phone_linear_fbank -i a.flac

Options follow s3prl's run_downstream.py where they can; see downstream/README.md. Mistakes
print one line ``error: ...`` and exit with status 2 (--debug shows the traceback); Ctrl-C
saves a checkpoint at the next step and exits with 130.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional, Sequence

import utility.openmp_wait  # noqa: F401  (first: OpenMP reads its wait policy when torch loads)

from downstream.base import SPLITS
from downstream.commands import MODES
from downstream.discovery import TASKS_DIR, available_tasks
from downstream.upstream_file import ALLOW_FLAG
from upstream import entry_names
from utility.cli import ArgumentParser, add_override_option, run_cli
from utility.checkpoint_keeper import SKIP_DAMAGED_FLAG


def _tasks_line(tasks_dir: Path) -> str:
    try:
        return ", ".join(available_tasks(tasks_dir))
    except (ValueError, FileNotFoundError) as error:  # -h must still show the options
        return f"(cannot list tasks: {error})"


def build_parser(tasks_dir: Path = TASKS_DIR) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description=__doc__,
        epilog=f"tasks: {_tasks_line(tasks_dir)}\nupstreams: {', '.join(entry_names())}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-m", "--mode", choices=sorted(MODES), default="train")
    parser.add_argument("-u", "--upstream", help="upstream name (listed below); optional with -k")
    parser.add_argument("-k", "--upstream_ckpt", help="upstream checkpoint (this project's or s3prl's)")
    parser.add_argument("-d", "--downstream", help="task folder name (listed below)")
    parser.add_argument("-c", "--config", help="task config YAML (default: the task folder's config.yaml)")
    parser.add_argument("-n", "--expname", help="experiment name: result/downstream/NAME")
    parser.add_argument("-p", "--expdir", help="experiment folder (instead of -n)")
    add_override_option(parser, help="config override, e.g. -o runner.total_steps=1000 data.root=/data/LibriSpeech")
    parser.add_argument("-f", "--finetune", action="store_true", help="train the upstream too")
    parser.add_argument(
        "-l",
        "--layer",
        type=int,
        default=None,
        help="use one hidden state (0: input representation, -1: last layer); default: learnable weighted sum",
    )
    parser.add_argument("-e", "--past_exp", help="experiment folder or .ckpt: resume (train), or the probe to evaluate / apply")
    parser.add_argument(
        SKIP_DAMAGED_FLAG,
        action="store_true",
        help="with -e FOLDER: use its newest intact checkpoint when newer ones are damaged",
    )
    parser.add_argument(
        ALLOW_FLAG,
        action="store_true",
        help="with -e: use the upstream checkpoint even if it changed since the probe was trained (the results record it)",
    )
    parser.add_argument(
        "-t",
        "--split",
        action="extend",
        nargs="+",
        choices=SPLITS,
        help="evaluate: split(s) to score, e.g. -t dev test (default dev and test)",
    )
    parser.add_argument("-i", "--inputs", nargs="+", help="inference: audio files")
    parser.add_argument("--output", help="inference: write predictions here instead of printing them")
    parser.add_argument(
        "--seed",
        type=int,
        help="seeds weights, batches and the train_proportion draw (default 1337; a resumed run keeps its own)",
    )
    parser.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda or cuda:N")
    parser.add_argument(
        "--tasks-dir", type=Path, default=tasks_dir, help="your own task folders, searched before the built-in ones"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Any:
    # The task list in -h comes from --tasks-dir, so read that option first.
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    early.add_argument("--tasks-dir", type=Path, default=TASKS_DIR)
    args = build_parser(early.parse_known_args(argv)[0].tasks_dir).parse_args(argv)
    return MODES[args.mode](args)


if __name__ == "__main__":
    run_cli(main, memory_hint="lower the batch size (-o runner.batch_size=N runner.eval_batch_size=N)")
