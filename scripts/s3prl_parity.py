"""Compare this project's loading of an s3prl checkpoint with s3prl 0.4.18's own expert.

A development tool: it needs s3prl 0.4.18, which this project never depends on, so run it
from a scratch environment outside the repository::

    python -m venv --system-site-packages /tmp/s3prl-venv
    /tmp/s3prl-venv/bin/pip install --no-deps s3prl==0.4.18
    /tmp/s3prl-venv/bin/python scripts/s3prl_parity.py CKPT AUDIO [AUDIO ...] [--threads 2]

It prints, for every hidden state, the largest |ours - s3prl| over the given audio files (each
forwarded alone) and over a timing batch of 8 ten-second waveforms cut from those files
(repeated if they are shorter), then the median time of both on that batch after a warm-up,
with a fixed thread count. ``tests/fixtures/make_s3prl_fixtures.py --full-size DIR`` writes
768-hidden 3- and 12-layer s3prl files to try it on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from upstream import build_upstream, read_audio  # noqa: E402

SAMPLE_RATE = 16000


def load_s3prl_expert(ckpt: Path) -> torch.nn.Module:
    try:
        from s3prl.upstream.mockingjay.expert import UpstreamExpert
    except ImportError as error:
        raise SystemExit(
            f"s3prl is not importable ({error}); install s3prl==0.4.18 in a scratch environment (see --help)"
        ) from error
    # s3prl's expert leaves its Transformer in training mode (dropout on) unless asked.
    return UpstreamExpert(str(ckpt)).eval()


def timing_batch(wavs: Sequence[torch.Tensor], batch: int, seconds: float) -> list[torch.Tensor]:
    """``batch`` consecutive ``seconds``-long pieces of the files joined end to end (repeated
    as often as needed)."""
    length = int(seconds * SAMPLE_RATE)
    joined = torch.cat(list(wavs))
    joined = joined.repeat(-(-batch * length // joined.numel()))
    return [joined[i * length : (i + 1) * length].clone() for i in range(batch)]


def hidden_states(model: Callable, wavs: list[torch.Tensor]) -> torch.Tensor:
    """(N + 1, batch, frames, hidden) from either model."""
    with torch.inference_mode():
        return torch.stack(tuple(model(wavs)["hidden_states"]))


def max_deviation(ours: Callable, theirs: Callable, batches: list[list[torch.Tensor]]) -> torch.Tensor:
    """(N + 1,) largest |ours - s3prl| of each hidden state over the batches (same lengths in
    a batch, so s3prl's padding handling plays no part)."""
    worst = None
    for wavs in batches:
        a, b = hidden_states(ours, wavs), hidden_states(theirs, wavs)
        if a.shape != b.shape:
            raise SystemExit(f"shape mismatch: ours {tuple(a.shape)}, s3prl {tuple(b.shape)}")
        deviation = (a - b).abs().amax(dim=(1, 2, 3))
        worst = deviation if worst is None else torch.maximum(worst, deviation)
    return worst


def median_seconds(model: Callable, wavs: list[torch.Tensor], runs: int) -> float:
    hidden_states(model, wavs)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        hidden_states(model, wavs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed(build: Callable[[], torch.nn.Module], first_input: list[torch.Tensor]) -> tuple[torch.nn.Module, float]:
    """A model and the seconds from building it to its first extraction."""
    start = time.perf_counter()
    model = build()
    hidden_states(model, first_input)
    return model, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("ckpt", type=Path, help="an s3prl Mockingjay / AALBERT checkpoint")
    parser.add_argument("audio", type=Path, nargs="+", help="wav/flac files (16 kHz after resampling)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up (median reported)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"], help="our encoder's precision")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    wavs = [read_audio(path) for path in args.audio]
    batch = timing_batch(wavs, args.batch, args.seconds)
    theirs, theirs_start = timed(lambda: load_s3prl_expert(args.ckpt), wavs[:1])
    ours, ours_start = timed(lambda: build_upstream(None, args.ckpt, precision=args.precision), wavs[:1])

    print(
        f"checkpoint: {args.ckpt} ({ours.config.family}, {ours.config.encoder.num_layers} layers, "
        f"hidden {ours.config.encoder.hidden_size}); ours in {args.precision}; {args.threads} threads"
    )
    single = max_deviation(ours, theirs, [[wav] for wav in wavs])
    batched = max_deviation(ours, theirs, [batch])
    print(f"{'hidden state':>12}  {'max |ours - s3prl|, files alone':>32}  {'timing batch':>14}")
    for index, (a, b) in enumerate(zip(single.tolist(), batched.tolist())):
        print(f"{index:>12}  {a:>32.3e}  {b:>14.3e}")

    audio_seconds = args.batch * args.seconds
    print(f"\nbuild + first extraction: s3prl {theirs_start:.2f} s, ours {ours_start:.2f} s")
    print(f"batch of {args.batch} x {args.seconds:g} s, median of {args.runs} after a warm-up:")
    results = {}
    for name, model in (("s3prl", theirs), ("ours", ours)):
        seconds = median_seconds(model, batch, args.runs)
        results[name] = seconds
        print(f"  {name:6s} {seconds:7.3f} s  (real-time factor {seconds / audio_seconds:.4f})")
    print(f"  speed-up: {results['s3prl'] / results['ours']:.2f}x")


if __name__ == "__main__":
    main()
