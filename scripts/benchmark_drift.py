"""Does a run slow down as it goes? Per-update and per-evaluation times over a long run.

Runs a probing task (or the pretraining runner) for ``--updates`` updates and reports the mean
time of the first and the last ``--window`` updates, their ratio, and the time of each dev
evaluation. A ratio near 1 means a steady run; the asr_ctc stall this was written for (two
spinning OpenMP threads in an LSTM head while other jobs held the cores, see downstream/README.md,
"Speed on a shared machine") showed ratios of 20-60. The medians of the same windows are printed
too: the first updates of a run also extract features (fbank or an upstream) that later epochs
read from the cache, and a median is not moved by those or by a single stall. The CPU model and
its relevant features are printed beside the numbers: bf16 speed and the cost of subnormal
numbers depend on them.

    python scripts/benchmark_drift.py -d asr_ctc                         # 300 updates, as the CLIs run
    python scripts/benchmark_drift.py -d asr_ctc --flush-denormal off    # the library default
    python scripts/benchmark_drift.py -d phone_ctc --updates 100 --threads 1
    python scripts/benchmark_drift.py --pretrain aalbert_3L --updates 200
    python scripts/benchmark_drift.py -d asr_ctc --updates 14 --eval-step 5 --count-subnormals
    python scripts/benchmark_drift.py -d asr_ctc --threads 2 --busy 1    # another job holds a core

``--count-subnormals`` also counts subnormal float32 values in the recurrent heads' weights,
outputs and output gradients at every update (slow; for diagnosis). Not run by CI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import utility.openmp_wait  # noqa: E402,F401  (first: OpenMP reads its wait policy when torch loads)
import torch  # noqa: E402
from torch import nn  # noqa: E402

from utility.cli import add_override_option  # noqa: E402
from utility.cpu_features import cpu_report  # noqa: E402
from utility.process_defaults import apply_cli_process_defaults  # noqa: E402


class Clock:
    """Seconds of each update and each evaluation; evaluation time is not update time."""

    def __init__(self) -> None:
        self.updates: list[float] = []
        self.evaluations: list[float] = []
        self.mark = time.perf_counter()

    def update_done(self) -> None:
        now = time.perf_counter()
        self.updates.append(now - self.mark)
        self.mark = now

    def timed_evaluation(self, evaluate: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = evaluate(*args, **kwargs)
            self.evaluations.append(time.perf_counter() - started)
            self.mark = time.perf_counter()
            return result

        return wrapped


def subnormal_count(tensor: torch.Tensor) -> int:
    """Nonzero values below the smallest normal number of the tensor's float type."""
    if not tensor.is_floating_point():
        return 0
    tiny = torch.finfo(tensor.dtype).tiny
    return int(((tensor != 0) & (tensor.abs() < tiny)).sum())


INTERNALS = ("gate_preactivations_below_-87", "gates", "cells", "cell_grads", "gate_grads")


def replay_lstm(lstm: nn.LSTM, x: torch.Tensor, output_grad: torch.Tensor) -> dict[str, int]:
    """Subnormal counts inside one single-layer unidirectional nn.LSTM call, which its fused
    kernel hides: the layer is replayed step by step with autograd on the same input and
    weights, and the real output gradient is sent back through it.

    Gate pre-activations below -87.3 give sigmoid values below float32's smallest normal
    number; every product with such a gate is then a subnormal operation."""
    w_ih, w_hh, b_ih, b_hh = (
        t.detach().requires_grad_() for t in (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
    )
    batch, steps, _ = x.shape
    h = x.new_zeros(batch, lstm.hidden_size)
    c = x.new_zeros(batch, lstm.hidden_size)
    projected = x.detach() @ w_ih.T + b_ih + b_hh  # (B, S, 4H)
    limit = torch.log(torch.tensor(torch.finfo(torch.float32).tiny)).item()  # -87.3
    counts = dict.fromkeys(INTERNALS, 0)
    cells, gates, outputs = [], [], []
    for t in range(steps):
        pre = projected[:, t] + h @ w_hh.T
        pre.retain_grad()
        counts["gate_preactivations_below_-87"] += int((pre < limit).sum())
        i, f, g, o = pre.chunk(4, dim=-1)
        i, f, o, g = i.sigmoid(), f.sigmoid(), o.sigmoid(), g.tanh()
        c = f * c + i * g
        c.retain_grad()
        h = o * c.tanh()
        for gate in (i, f, o):
            counts["gates"] += subnormal_count(gate.detach())
        counts["cells"] += subnormal_count(c.detach())
        cells.append(c)
        gates.append(pre)
        outputs.append(h)
    torch.stack(outputs, 1).backward(output_grad)
    counts["cell_grads"] = sum(subnormal_count(c.grad) for c in cells if c.grad is not None)
    counts["gate_grads"] = sum(subnormal_count(p.grad) for p in gates if p.grad is not None)
    return counts


class SubnormalCounter:
    """Subnormal values per update in every nn.LSTM: weights and weight gradients (after the
    update), outputs and output gradients, and (``replay``) the values inside the fused kernel
    of the update's training batches (see :func:`replay_lstm`)."""

    def __init__(self, model: nn.Module, replay: bool = True):
        self.lstms = [m for m in model.modules() if isinstance(m, nn.LSTM)]
        self.replay = replay
        self.current = self._zero()
        self.per_update: list[dict[str, int]] = []
        for lstm in self.lstms:
            lstm.register_forward_hook(self._forward_hook)

    @staticmethod
    def _zero() -> dict[str, int]:
        return dict.fromkeys(("weights", "weight_grads", "outputs", "output_grads", "values", *INTERNALS), 0)

    def _forward_hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        out = output[0]
        if not out.requires_grad:  # evaluation: not counted
            return
        self.current["outputs"] += subnormal_count(out.detach())
        self.current["values"] += out.numel()
        x = inputs[0].detach()

        def grad_hook(grad: torch.Tensor) -> None:
            self.current["output_grads"] += subnormal_count(grad)
            if self.replay:
                with torch.enable_grad():
                    for name, value in replay_lstm(module, x, grad.detach()).items():
                        self.current[name] += value

        out.register_hook(grad_hook)

    def update_done(self) -> None:
        for lstm in self.lstms:
            for p in lstm.parameters():
                self.current["weights"] += subnormal_count(p.detach())
                if p.grad is not None:
                    self.current["weight_grads"] += subnormal_count(p.grad)
        self.per_update.append(self.current)
        self.current = self._zero()


def run_task(args: argparse.Namespace, clock: Clock, folder: Path) -> dict[str, Any]:
    from downstream.discovery import load_task
    from downstream.probe_checkpoint import RunSpec
    from downstream.runner import Runner
    from downstream.settings import load_task_config
    from utility.process_group import init_distributed

    overrides = [
        f"runner.total_steps={args.updates}",
        f"runner.eval_step={args.eval_step}",
        f"runner.save_step={args.eval_step}",
        "runner.max_keep=1",
        *args.override,
    ]
    config = load_task_config(load_task(args.downstream), None, overrides)
    spec = RunSpec(
        task=args.downstream,
        upstream=args.upstream,
        upstream_ckpt=None,
        layer=None,
        fine_tune=args.finetune,
        seed=1337,
        config=config,
    )
    runner = Runner(spec, init_distributed("cpu"), folder)
    counter = SubnormalCounter(runner.model) if args.count_subnormals else None
    build_update = runner.build_update

    def timed_build_update(network: nn.Module):
        update = build_update(network)
        step = update.step

        def timed_step() -> Any:
            result = step()
            clock.update_done()
            if counter is not None:
                counter.update_done()
            return result

        update.step = timed_step
        return update

    runner.build_update = timed_build_update
    runner.evaluate = clock.timed_evaluation(runner.evaluate)
    clock.mark = time.perf_counter()
    runner.train()
    return {"subnormals": counter.per_update} if counter else {}


def run_pretrain(args: argparse.Namespace, clock: Clock, folder: Path) -> dict[str, Any]:
    from pretrain.settings import load_settings
    from pretrain.trainer import Pretrainer
    from utility.process_group import init_distributed

    overrides = [
        f"runner.total_steps={args.updates}",
        f"runner.save_step={args.eval_step}",
        "runner.max_keep=1",
        "runner.image_step=0",
        *args.override,
    ]
    settings = load_settings(args.pretrain, args.config, overrides)
    trainer = Pretrainer(settings, folder, init_distributed("cpu"))
    update = trainer._update

    def timed_update(*a: Any, **k: Any) -> Any:
        result = update(*a, **k)
        clock.update_done()
        return result

    trainer._update = timed_update
    trainer.evaluate = clock.timed_evaluation(trainer.evaluate)
    clock.mark = time.perf_counter()
    trainer.run()
    return {}


# Keeps a core busy until the benchmark ends, or dies: it stops once its parent is gone.
SPIN = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """``count`` processes that keep a core each busy while the block runs (another job's load).
    Plain interpreters that start spinning at once, so the first updates are timed under load."""
    workers = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]
    try:
        yield
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait()


def summary(clock: Clock, window: int) -> dict[str, Any]:
    updates = clock.updates
    window = max(1, min(window, len(updates) // 2))
    first, last = statistics.mean(updates[:window]), statistics.mean(updates[-window:])
    return {
        "updates": len(updates),
        "window": window,
        "first_mean_s": round(first, 4),
        "last_mean_s": round(last, 4),
        "last_over_first": round(last / first, 2),
        "first_median_s": round(statistics.median(updates[:window]), 4),
        "last_median_s": round(statistics.median(updates[-window:]), 4),
        "median_last_over_first": round(statistics.median(updates[-window:]) / statistics.median(updates[:window]), 2),
        "slowest_update_s": round(max(updates), 3),
        "evaluations_s": [round(e, 2) for e in clock.evaluations],
        "last_eval_over_first": round(clock.evaluations[-1] / clock.evaluations[0], 2) if clock.evaluations else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("-d", "--downstream", help="probing task to run (demo corpus unless -o data.root=...)")
    what.add_argument("--pretrain", metavar="UPSTREAM", help="run the pretraining runner for this upstream instead")
    parser.add_argument("-u", "--upstream", default="fbank", help="upstream of the probing task (default fbank)")
    parser.add_argument("-f", "--finetune", action="store_true", help="train the upstream too (probing tasks)")
    parser.add_argument("-c", "--config", help="pretraining settings file (e.g. pretrain/recipes/cpu.yaml)")
    add_override_option(parser, help="task or pretraining setting overrides, KEY=VALUE")
    parser.add_argument("--updates", type=int, default=300, help="updates to run (default 300)")
    parser.add_argument("--eval-step", type=int, default=100, help="updates between dev evaluations (default 100)")
    parser.add_argument("--window", type=int, default=50, help="updates averaged at the start and the end (default 50)")
    parser.add_argument("--threads", type=int, help="torch threads (default: as the commands choose)")
    parser.add_argument(
        "--flush-denormal", choices=["on", "off"], default="on", help="on: as the CLIs run (default); off: the library default"
    )
    parser.add_argument("--count-subnormals", action="store_true", help="count subnormal values in the LSTM heads")
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        metavar="N",
        help="run N busy-loop processes beside the run: a machine shared with other jobs",
    )
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    if args.updates < 2:
        parser.error("--updates must be at least 2")
    if args.busy < 0:
        parser.error("--busy must not be negative")

    # As run_downstream.py / run_pretrain.py set up the process (the task's thread count included).
    apply_cli_process_defaults()
    if args.flush_denormal == "off":
        torch.set_flush_denormal(False)
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # as a user's choice: tasks keep it
        torch.set_num_threads(args.threads)
    clock = Clock()
    with tempfile.TemporaryDirectory() as folder, busy_processes(args.busy):
        extra = run_pretrain(args, clock, Path(folder)) if args.pretrain else run_task(args, clock, Path(folder))
    result = {
        "run": f"pretrain {args.pretrain}" if args.pretrain else f"{args.downstream} on {args.upstream}",
        "threads": torch.get_num_threads(),
        "flush_denormal": args.flush_denormal,
        "busy_processes": args.busy,
        **cpu_report(),
        **summary(clock, args.window),
    }
    print(json.dumps(result, indent=2))
    if extra.get("subnormals"):
        counts = extra["subnormals"]
        print("subnormal values in the LSTM heads per update:")
        for step, c in enumerate(counts, 1):
            print(f"  update {step:4d}: " + ", ".join(f"{name} {value}" for name, value in c.items()))
        result["subnormals"] = counts
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
