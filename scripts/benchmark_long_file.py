"""Peak memory of the feature cache's first pass over one long file, against its size estimate.

    python scripts/benchmark_long_file.py [--minutes 10] [--model tiny|aalbert_3L|...]

Writes a synthetic file (noise) of ``--minutes`` to a temporary folder, builds the upstream
(``tiny``: the tests' 32-wide, 2-layer AALBERT; otherwise a named preset with random weights),
and runs the cache's first pass (``downstream.feature_cache.fill_cache``, float16 storage,
every hidden state, in memory) in a fresh process. Prints the stored size and the process's
peak resident memory (``ru_maxrss``) above what it held just before the pass (Linux).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def resident_bytes() -> int:
    """This process's resident memory now (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmRSS in /proc/self/status (this script needs Linux)")


def measure(model_name: str, minutes: float) -> dict:
    """In this process: the pass over one ``minutes`` file; returns what it measured."""
    import numpy as np
    import soundfile
    import torch

    from downstream.base import ProbeDataset
    from downstream.feature_cache import MemoryStore, fill_cache
    from upstream import Upstream, build_upstream
    from upstream.config import EncoderConfig, FrontendConfig, UpstreamConfig

    torch.manual_seed(0)
    if model_name == "tiny":
        encoder = EncoderConfig(input_dim=160, downsample_rate=3, hidden_size=32, num_layers=2, num_heads=4,
                                intermediate_size=64, share_layer=True, hidden_dropout=0.0, attention_dropout=0.0)
        model = Upstream(UpstreamConfig(family="aalbert", frontend=FrontendConfig(), encoder=encoder)).eval()
    else:
        model = build_upstream(model_name, pretrained=False).eval()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "long.flac"
        samples = np.random.default_rng(0).normal(0, 0.1, int(16000 * 60 * minutes)).astype(np.float32)
        soundfile.write(path, samples, 16000)
        del samples
        dataset = ProbeDataset(["long"], [str(path)], [torch.tensor(0)], [np.array([0])])
        before = resident_bytes()
        store = MemoryStore()
        (keys,) = fill_cache(model, [dataset], store, None, torch.float16, 0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        stored = store.get(keys[0])
    return {"model": model_name, "minutes": minutes, "stored_bytes": stored.numel() * stored.element_size(),
            "shape": list(stored.shape), "rss_before": before, "rss_peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", default="tiny", help="tiny, or an upstream name (random weights)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.model, args.minutes)))
        return
    # A fresh process: ru_maxrss is a high-water mark, nothing before the pass may have raised it.
    command = [sys.executable, __file__, "--child", "--model", args.model, "--minutes", str(args.minutes)]
    result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    extra = result["rss_peak"] - result["rss_before"]
    print(
        f"{result['model']}, one {result['minutes']:g}-minute file: stored {result['shape']} float16 = "
        f"{result['stored_bytes'] / 2**20:.1f} MiB; peak RSS {result['rss_peak'] / 2**20:.0f} MiB, "
        f"{extra / 2**20:.0f} MiB above the {result['rss_before'] / 2**20:.0f} MiB before the pass "
        f"({extra / result['stored_bytes']:.1f}x the stored size)"
    )


if __name__ == "__main__":
    main()
