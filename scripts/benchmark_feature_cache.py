"""End-to-end time of probes with and without the feature cache, in the same run.

    python scripts/benchmark_feature_cache.py --root CORPUS -u aalbert_3L mockingjay_12L fbank \\
        -d phone_linear speaker_utterance --steps 3000 --uncached-steps 300 --json cache.json

Each probe runs as its own ``run_downstream.py`` process, once with the default
(``runner.feature_cache=auto``) and once with ``runner.feature_cache=off``, one after the other,
and the wall time of the whole command (start-up, extraction, training, evaluation) is taken.
Without a cache every update repeats the upstream pass, so ``--uncached-steps`` may be smaller
than ``--steps``: the uncached time for ``--steps`` is then extrapolated from the measured
time per update (reported as such), and the metrics of both are compared on a second cached
run of ``--uncached-steps`` updates (same steps, so they must agree within float16 storage noise).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_probe(upstream: str, task: str, steps: int, cache: str, root: str, threads: int, workdir: Path) -> dict:
    """One run_downstream.py process; its wall time and results."""
    expdir = workdir / f"{task}_{upstream}_{cache}_{steps}"
    eval_step = max(1, steps // 6)
    command = [
        sys.executable,
        str(REPO / "run_downstream.py"),
        "-u",
        upstream,
        "-d",
        task,
        "-p",
        str(expdir),
        "--device",
        "cpu",
        "-o",
        f"data.root={root}",
        f"runner.total_steps={steps}",
        f"runner.eval_step={eval_step}",
        f"runner.log_step={eval_step}",
        f"runner.feature_cache={cache}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    results = json.loads((expdir / "results.json").read_text())
    metric = results["metric"]
    return {
        "upstream": upstream,
        "task": task,
        "cache": cache,
        "steps": steps,
        "seconds": round(seconds, 1),
        "dev": results["dev"][metric],
        "test": results["test"][metric],
        "metric": metric,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", required=True, help="LibriSpeech-layout corpus with alignments")
    parser.add_argument("-u", "--upstreams", nargs="+", default=["aalbert_3L", "mockingjay_12L"])
    parser.add_argument("-d", "--tasks", nargs="+", default=["phone_linear", "speaker_utterance"])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--uncached-steps", type=int, help="updates of the uncached run (default: --steps)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    uncached_steps = args.uncached_steps or args.steps
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        for upstream in args.upstreams:
            for task in args.tasks:
                cached = run_probe(upstream, task, args.steps, "auto", args.root, args.threads, workdir)
                plain = run_probe(upstream, task, uncached_steps, "off", args.root, args.threads, workdir)
                same = (
                    cached
                    if uncached_steps == args.steps
                    else run_probe(upstream, task, uncached_steps, "auto", args.root, args.threads, workdir)
                )
                plain_full = plain["seconds"] * args.steps / uncached_steps
                row = {
                    "upstream": upstream,
                    "task": task,
                    "steps": args.steps,
                    "cached_s": cached["seconds"],
                    "uncached_s": round(plain_full, 1),
                    "uncached_extrapolated": uncached_steps != args.steps,
                    "speed-up": round(plain_full / cached["seconds"], 1),
                    "metric": cached["metric"],
                    "cached_dev": cached["dev"],
                    "cached_test": cached["test"],
                    "compared_at_steps": uncached_steps,
                    "same_steps_cached_test": same["test"],
                    "uncached_test": plain["test"],
                    "same_steps_cached_dev": same["dev"],
                    "uncached_dev": plain["dev"],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
