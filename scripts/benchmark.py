"""Feature-extraction speed of the upstreams on the CPU.

    python scripts/benchmark.py                          # every preset, batch 1 and 8, 2 threads
    python scripts/benchmark.py -m aalbert_3L -b 8 --precision float32 bfloat16
    python scripts/benchmark.py -k s3prl_or_own.ckpt -b 8  # whatever a checkpoint describes

Each (model, precision, batch size) runs in a fresh process, so its peak memory (max RSS) is
its own: it times building the model plus extracting a first 1-second clip, then extraction
of ``batch`` waveforms of ``--seconds`` seconds: one warm-up and the median of ``--runs``
runs, under ``torch.inference_mode``. Real-time factor = compute time / audio duration. For
bfloat16 it also reports the largest absolute deviation of any hidden state from float32
(peak memory then includes the float32 reference model).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from hub import ENTRIES  # noqa: E402
from utility.cpu_features import cpu_line  # noqa: E402

DEFAULT_MODELS = list(ENTRIES)  # every hub entry (torchaudio's models for comparison: random weights time the same)


def measure(args: argparse.Namespace) -> dict:
    """Runs inside the worker process."""
    started = time.perf_counter()
    import torch

    sys.path.insert(0, str(REPO))
    from upstream.loading import build_upstream
    from utility.cpu_allocator import keep_freed_memory_for_reuse

    keep_freed_memory_for_reuse()  # as the command-line tools do (off with MAM_KEEP_GLIBC_DEFAULTS=1)
    imported = time.perf_counter()
    torch.set_num_threads(args.threads)

    def build(precision: str):
        torch.manual_seed(0)  # the same (random) weights for every precision
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random weights are fine for timing
            return build_upstream(None if args.ckpt else args.model, args.ckpt, precision=precision)

    model = build(args.precision)
    with torch.inference_mode():
        model([0.1 * torch.randn(16000)])
        first_feature = time.perf_counter()
        wavs = [0.1 * torch.randn(int(args.seconds * 16000)) for _ in range(args.batch)]
        model(wavs)  # warm-up
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            model(wavs)
            times.append(time.perf_counter() - start)
        deviation = None
        if args.precision != "float32":
            outputs = model(wavs)["hidden_states"]
            reference = build("float32")(wavs)["hidden_states"]
            deviation = max((a - b).abs().max().item() for a, b in zip(outputs, reference))
    seconds = statistics.median(times)
    return {
        "model": args.ckpt or args.model,
        "precision": args.precision,
        "batch": args.batch,
        "seconds": seconds,
        "rtf": seconds / (args.batch * args.seconds),
        "import_s": imported - started,
        "build_and_first_feature_s": first_feature - imported,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "max_abs_deviation_vs_float32": deviation,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-m", "--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("-k", "--ckpt", help="benchmark the model this checkpoint describes instead of presets")
    parser.add_argument("-b", "--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--precision", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each waveform")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--keep-glibc-defaults", action="store_true", help="leave glibc malloc untuned (see utility/cpu_allocator.py)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.precision = args.precision[0]
        print(json.dumps(measure(args)))
        return

    results = []
    print(cpu_line())  # float32 and bfloat16 speed depend on these
    print(
        f"{'model':16s} {'precision':9s} {'batch':>5s} {'time s':>8s} {'RTF':>7s} {'build+1st s':>11s} {'peak GB':>8s} "
        f"{'max |bf16-fp32|':>15s}"
    )
    for model in [args.ckpt] if args.ckpt else args.models:
        for precision in args.precision:
            for batch in args.batch_sizes:
                command = [sys.executable, __file__, "--worker", "--batch", str(batch), "--precision", precision]
                command += ["--seconds", str(args.seconds), "--runs", str(args.runs), "--threads", str(args.threads)]
                command += ["--ckpt", args.ckpt] if args.ckpt else ["--model", model]
                env = dict(os.environ, MAM_KEEP_GLIBC_DEFAULTS="1" if args.keep_glibc_defaults else "0")
                output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
                result = json.loads(output.strip().splitlines()[-1])
                results.append(result)
                deviation = result["max_abs_deviation_vs_float32"]
                print(
                    f"{Path(str(result['model'])).name[:16]:16s} {precision:9s} {batch:5d} {result['seconds']:8.3f} "
                    f"{result['rtf']:7.4f} {result['build_and_first_feature_s']:11.2f} {result['peak_rss_gb']:8.2f} "
                    f"{'' if deviation is None else format(deviation, '15.4f')}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
