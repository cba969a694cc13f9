"""Does a pretrained model use context? Held-out masked L1 of pretraining checkpoints with three inputs.

For each checkpoint: the masked L1 (float32) on the trainer's own held-out set and masks (the
first ``corpus.dev_utterances`` utterances of ``corpus.dev_subsets``, masks fixed by
``runner.seed``, as the trainer scores ``best.ckpt``), with

- ``as_trained``: the masked input as in training;
- ``visible_shuffled``: the visible (unselected) stacked frames of each utterance shuffled in time
  among the visible positions (the same frames, their local order destroyed; masked positions
  untouched);
- ``all_zero``: every input frame zero (only positions and lengths are left).

A model that uses local context scores worse when its visible frames are shuffled; a model that
has learned only a context-free output scores the same on all three (or better on zeros).

    OMP_NUM_THREADS=1 python scripts/pretrain_context_test.py exp/my_run/best.ckpt
    OMP_NUM_THREADS=1 python scripts/pretrain_context_test.py exp/my_run            # every step checkpoint
    OMP_NUM_THREADS=1 python scripts/pretrain_context_test.py exp/a/best.ckpt exp/b/best.ckpt \\
        --root /path/to/corpus                                                       # another corpus root
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pretrain.data import BatchMaker, MaskedBatch, dev_batches, select_utterances  # noqa: E402
from pretrain.model import MaskedAcousticModel  # noqa: E402
from pretrain.settings import PretrainSettings, stored_settings  # noqa: E402
from pretrain.state import read_training_checkpoint  # noqa: E402
from upstream.encoder import TransformerEncoder, stack_frames  # noqa: E402
from utility.checkpoint_keeper import CheckpointKeeper  # noqa: E402

VARIANTS = ("as_trained", "visible_shuffled", "all_zero")


def checkpoint_paths(paths: list[str]) -> list[Path]:
    """Checkpoint files as given; an experiment folder stands for its step checkpoints, oldest first."""
    found = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            steps = [step_path for _, step_path in sorted(CheckpointKeeper(path).step_checkpoints())]
            if not steps:
                raise SystemExit(f"{path}: no step checkpoints in this folder")
            found.extend(steps)
        else:
            raise SystemExit(f"{path}: no such checkpoint file or experiment folder")
    return found


def shuffle_visible(batch: MaskedBatch, rate: int, generator: torch.Generator) -> torch.Tensor:
    """The (B, T, D) masked input with each utterance's visible stacked frames permuted in time
    among the visible positions of that utterance; selected positions and the < R leftover raw
    frames at the end stay as they are."""
    x = batch.inputs.clone()
    b_size, frames, dim = x.shape
    stacked = frames // rate
    xs = x[:, : stacked * rate].reshape(b_size, stacked, rate * dim)
    for i in range(b_size):
        length = int(batch.lengths[i]) // rate
        visible = (~batch.selected[i, :length]).nonzero().view(-1)
        xs[i, visible] = xs[i, visible[torch.randperm(len(visible), generator=generator)]]
    return torch.cat([xs.reshape(b_size, stacked * rate, dim), x[:, stacked * rate :]], 1)


def context_losses(model: MaskedAcousticModel, batches: list[MaskedBatch], rate: int) -> dict[str, float]:
    """Masked L1 (mean over selected stacked positions x R frames x target dims) per input variant."""
    generator = torch.Generator().manual_seed(0)
    result = {}
    with torch.no_grad():
        for variant in VARIANTS:
            total, count = 0.0, 0
            for batch in batches:
                if variant == "all_zero":
                    inputs = torch.zeros_like(batch.inputs)
                elif variant == "visible_shuffled":
                    inputs = shuffle_visible(batch, rate, generator)
                else:
                    inputs = batch.inputs
                prediction = model(inputs, batch.lengths)  # (B, S, Dt * R)
                targets, _ = stack_frames(batch.targets, batch.lengths, rate)  # (B, S, Dt * R)
                errors = (prediction - targets[:, : prediction.shape[1]]).abs()[batch.selected]
                total += float(errors.sum())
                count += errors.numel()
            result[variant] = total / count
    return result


def load_model(checkpoint: dict[str, Any], settings: PretrainSettings) -> MaskedAcousticModel:
    encoder = TransformerEncoder(settings.model.encoder)
    encoder.load_state_dict(checkpoint["upstream"]["state_dict"])
    model = MaskedAcousticModel(encoder, settings.model.frontend.target_dim)
    model.head.load_state_dict(checkpoint["head"])
    return model.eval()


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", help="pretraining checkpoint files or experiment folders")
    parser.add_argument("--root", help="corpus root for the held-out set (default: each checkpoint's corpus.root)")
    parser.add_argument("--micro-batch", type=int, default=8, help="held-out utterances per forward pass")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    cache: dict[str, list[MaskedBatch]] = {}
    rows = []
    print(f"{'checkpoint':<50}{'target':>8}{'lr':>9}{'step':>7}" + "".join(f"{v:>18}" for v in VARIANTS))
    for path in checkpoint_paths(args.checkpoints):
        checkpoint = read_training_checkpoint(path)
        settings = stored_settings(checkpoint["pretraining"]["settings"], source=str(path))
        if args.root:
            settings.corpus.root = args.root
        stored = settings.to_dict()  # the held-out batches depend on these settings only
        key = json.dumps(
            [
                stored["corpus"],
                stored["data"],
                stored["masking"],
                stored["model"]["frontend"],
                settings.downsample_rate,
                settings.runner.seed,
            ],
            sort_keys=True,
            default=str,
        )
        if key not in cache:
            maker = BatchMaker(settings)
            dev = select_utterances(settings, settings.corpus.dev_subsets, maker.min_samples())
            cache[key] = dev_batches(dev[: settings.corpus.dev_utterances], settings, args.micro_batch)
        if not cache[key]:
            raise SystemExit(f"{path}: the held-out set {settings.corpus.dev_subsets} under {settings.corpus.root} is empty")
        losses = context_losses(load_model(checkpoint, settings), cache[key], settings.downsample_rate)
        step = checkpoint["metadata"].get("step", checkpoint["pretraining"].get("step"))
        row = {
            "checkpoint": str(path),
            "target": settings.model.frontend.target,
            "lr": settings.optimizer.lr,
            "step": step,
            **losses,
        }
        rows.append(row)
        print(
            f"{str(path)[-50:]:<50}{row['target']:>8}{row['lr']:>9.1e}{str(step):>7}"
            + "".join(f"{losses[v]:>18.4f}" for v in VARIANTS),
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
