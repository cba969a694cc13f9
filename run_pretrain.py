#!/usr/bin/env python
"""Pretrain a Mockingjay / AALBERT upstream with masked acoustic modelling.

    python run_pretrain.py -u aalbert_3L -n demo_10min -c pretrain/recipes/cpu.yaml -o runner.max_minutes=10
    python run_pretrain.py -u aalbert_6L -n ls360 -o corpus.root=/data/LibriSpeech \\
        -o "corpus.subsets=[train-clean-360]"
    python run_pretrain.py -e result/pretrain/ls360                    # continue exactly
    torchrun --nproc_per_node 4 run_pretrain.py -u mockingjay_3L -n ddp  # several processes / GPUs

The first runs 10 minutes on the demo corpus with the CPU recipe; without -c or
runner.total_steps a run takes the paper length (500,000 updates: days on a GPU).

Settings: the defaults in pretrain/settings.py (every knob, documented), the family's paper
values in pretrain/families/, then -c FILE, then -o key.sub=value; --print-config shows the
result. See pretrain/README.md. Mistakes print one line ``error: ...`` and exit with status 2
(--debug shows the traceback); Ctrl-C saves a checkpoint at the next step and exits with 130.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

import utility.openmp_wait  # noqa: F401  (first: OpenMP reads its wait policy when torch loads)

import yaml

from pretrain.runner import pretrain
from pretrain.settings import load_settings
from pretrain.trainer import PretrainOutcome
from upstream import entry_names
from utility.cli import ArgumentParser, add_override_option, run_cli
from utility.checkpoint_keeper import SKIP_DAMAGED_FLAG


MEMORY_HINT = (
    "lower the batch size: more -o runner.gradient_accumulate_steps=N (same results, smaller pieces) "
    "or a smaller -o data.batch_size=N"
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-u", "--upstream", help=f"model to pretrain: {', '.join(entry_names())}")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-n", "--name", help="experiment name: saved under result/pretrain/NAME")
    where.add_argument("-p", "--expdir", help="experiment folder (instead of -n)")
    parser.add_argument("-c", "--config", help="YAML file of run settings (overrides the defaults)")
    add_override_option(
        parser, help="override settings, e.g. -o runner.total_steps=1000 model.encoder.hidden_size=256 (repeatable)"
    )
    parser.add_argument("-e", "--resume", metavar="PATH", help="continue the run in this experiment folder or checkpoint")
    parser.add_argument(
        SKIP_DAMAGED_FLAG,
        action="store_true",
        help="with -e FOLDER: when its newest checkpoints are damaged, continue from the newest intact one",
    )
    parser.add_argument("--seed", type=int, help="random seed (default: runner.seed of the config)")
    parser.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda or cuda:N")
    parser.add_argument("--print-config", action="store_true", help="print the resolved settings of -u/-c/-o and exit")
    parser.add_argument(
        "--stop-at-step",
        type=int,
        metavar="STEP",
        help="end this invocation at STEP with a checkpoint (for time-limited jobs); continue later with -e",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Optional[PretrainOutcome]:
    args = build_parser().parse_args(argv)
    if args.print_config:
        if args.upstream is None:
            raise ValueError("--print-config needs -u UPSTREAM")
        print(yaml.safe_dump(load_settings(args.upstream, args.config, args.override).to_dict(), sort_keys=False), end="")
        return None
    return pretrain(
        upstream=args.upstream,
        name=args.name,
        experiment=args.expdir,
        config_file=args.config,
        overrides=args.override,
        resume=args.resume,
        seed=args.seed,
        device=args.device,
        stop_at_step=args.stop_at_step,
        skip_damaged=args.skip_damaged,
    )


if __name__ == "__main__":
    run_cli(main, memory_hint=MEMORY_HINT)
