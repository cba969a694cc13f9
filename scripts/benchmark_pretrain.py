"""Pretraining step benchmark: seconds per step, frames per second and peak memory.

One step = forward, masked L1 loss, backward, gradient clipping and an AdamW update, on a
batch of ``--batch`` utterances of ``--frames`` 10 ms frames (features precomputed: the
DataLoader workers compute them in parallel during training). Each model runs in a fresh
subprocess so that its peak resident memory (``ru_maxrss``) is its own.

    python scripts/benchmark_pretrain.py                        # presets, batch 8 x 10 s, 2 threads
    python scripts/benchmark_pretrain.py --setup s3prl          # R = 1, 80-dim, 1001 frames (s3prl's)
    python scripts/benchmark_pretrain.py --allocator default    # glibc malloc untuned
    python scripts/benchmark_pretrain.py --precision float32 bf16   # and with bf16 autocast, same run
    python scripts/benchmark_pretrain.py --device cuda          # GPU (bf16 autocast)
    python scripts/benchmark_pretrain.py --models aalbert_3L --width 256 768 --optimizer loop fused
                                  # the small-width recipe's model next to the preset; each phase of an
                                  # update timed (forward, loss, backward, clip, optimizer) for each
                                  # AdamW implementation, same run
    python scripts/benchmark_pretrain.py --setup s3prl --s3prl-python /tmp/s3prl-venv/bin/python
                                  # also s3prl 0.4.18's step, same run (an interpreter with s3prl)
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from utility.cpu_features import cpu_line  # noqa: E402

PRESETS = ["mockingjay_3L", "mockingjay_6L", "mockingjay_12L", "aalbert_3L", "aalbert_6L", "aalbert_12L"]

PHASES = ("forward", "loss", "backward", "clip", "optimizer")
PEAK_SIZE = 2048  # the square matrix product that measures the machine's peak
OPTIMIZERS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def time_steps(step, steps: int, batch: int, frames: int) -> dict:
    """Run ``step`` once to warm up (allocator, kernels, optimizer state), then ``steps`` times.

    On a shared machine other processes slow some steps down: the fastest step is the best
    estimate of what the model itself costs; the median is reported beside it. CPU time counts
    all threads: the work itself, whatever else runs on the machine.
    """
    walls, cpus = [], []
    for _ in range(steps + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    seconds = min(walls[1:])
    return {
        "batch": batch,
        "frames": frames,
        "seconds_per_step": seconds,
        "median_seconds_per_step": statistics.median(walls[1:]),
        "cpu_seconds_per_step": min(cpus[1:]),
        "steps_per_second": 1 / seconds,
        "frames_per_second": batch * frames / seconds,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def matmul_peak(dtype_name: str, size: int = PEAK_SIZE, repeats: int = 5) -> float:
    """The machine's matrix-product speed in GFLOP/s for ``dtype_name`` (float32 or bfloat16),
    at this process's thread count: the best of ``repeats`` products of two ``size`` x ``size``
    matrices (2 size^3 FLOPs each), after one warm-up. A square product this large is about the
    best case for the kernels (oneDNN/MKL on a CPU), so a model's step reaches a fraction of it."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _seconds(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def measure(
    name: str,
    setup: str,
    batch: int,
    frames: int,
    steps: int,
    device_name: str,
    recompute: bool,
    bf16: bool,
    width: int = 0,
    optimizer_kind: str = "loop",
) -> dict:
    """Time ``steps`` training steps of one preset (after one warm-up step) in this process.
    ``width`` > 0 resizes the encoder (hidden ``width``, heads of 64, FFN 4 x ``width``), as
    pretrain/recipes/cpu_small.yaml does; ``optimizer_kind`` picks AdamW's implementation."""
    import torch

    from upstream import Upstream, get_entry
    from pretrain.data import seeded_generator
    from pretrain.masking import mask_frames, masked_l1
    from pretrain.model import MaskedAcousticModel, recompute_layers_in_backward
    from pretrain.settings import load_settings
    from utility.precision import mixed_precision

    config = get_entry(name).preset()
    if setup == "s3prl":
        # s3prl's comparison setting: 80 log-mel in, the same 80 dims out, no stacking.
        config.frontend.delta_order, config.frontend.target = 0, "mel"
        config.encoder.input_dim, config.encoder.downsample_rate = 80, 1
    config.encoder.max_frames = 0  # attend over the whole input, as s3prl does at these lengths
    if width:
        config.encoder.hidden_size, config.encoder.num_heads, config.encoder.intermediate_size = width, width // 64, 4 * width
    device = torch.device(device_name)
    torch.manual_seed(0)
    model = MaskedAcousticModel(Upstream(config).encoder, config.frontend.target_dim)
    if recompute:
        recompute_layers_in_backward(model.encoder)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **OPTIMIZERS[optimizer_kind])
    precision = mixed_precision(device, enabled=bf16 or device.type == "cuda", cpu_bf16=bf16)
    rate = config.encoder.downsample_rate
    inputs = torch.randn(batch, frames, config.frontend.feature_dim)
    targets = torch.randn(batch, frames, config.frontend.target_dim, device=device)
    lengths = torch.full((batch,), frames)
    generators = [seeded_generator(0, b) for b in range(batch)]
    inputs, selected = mask_frames(inputs, lengths, generators, load_settings(name).masking, rate, config.frontend.base_dim)
    inputs, lengths, selected = inputs.to(device), lengths.to(device), selected.to(device)

    phases = {phase: [] for phase in PHASES}

    def timed(phase: str, started: float) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        phases[phase].append(now - started)
        return now

    def step() -> None:
        started = time.perf_counter()
        with precision.autocast():
            prediction = model(inputs, lengths)
        started = timed("forward", started)
        total, count = masked_l1(prediction, targets, lengths, selected, rate)
        started = timed("loss", started)
        precision.scaler.scale(total / count).backward()
        started = timed("backward", started)
        precision.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        started = timed("clip", started)
        precision.scaler.step(optimizer)
        precision.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        timed("optimizer", started)

    result = {
        "model": name,
        "setup": setup,
        "width": width or config.encoder.hidden_size,
        "optimizer": optimizer_kind,
        **time_steps(step, steps, batch, frames),
        "parameters": sum(p.numel() for p in model.encoder.parameters()),
    }
    # The step's floating-point work (matrix products and attention, forward and backward, as
    # torch counts them), the speed it ran at, and that speed as a share of this thread count's
    # matrix-product peak in the precision the products used (bf16 under bf16 autocast).
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()  # one more update, after the timed ones (the phase times keep their fastest)
    result["gflop_per_step"] = counter.get_total_flops() / 1e9
    result["achieved_gflops"] = result["gflop_per_step"] / result["seconds_per_step"]
    if device.type == "cpu":
        result["matmul_peak_gflops"] = {dtype: matmul_peak(dtype) for dtype in ("float32", "bfloat16")}
        used = "bfloat16" if bf16 else "float32"
        result["share_of_peak"] = result["achieved_gflops"] / result["matmul_peak_gflops"][used]
    # Each phase's fastest time after the warm-up step (the least disturbed by other work).
    result["phase_seconds"] = {phase: min(times[1:]) for phase, times in phases.items()}
    if device.type == "cuda":
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def measure_s3prl(name: str, batch: int, frames: int, steps: int) -> dict:
    """The same step with s3prl 0.4.18's model (its ``TransformerModel`` and
    ``TransformerSpecPredictionHead``, R = 1, 80-dim in and out) and its objective: L1 over
    ``masked_select`` of the masked values, as its Mockingjay pretrain expert computes it."""
    import torch
    from s3prl.upstream.mockingjay.model import TransformerConfig, TransformerModel, TransformerSpecPredictionHead

    from upstream import get_entry
    from upstream.s3prl.export import s3prl_upstream_config

    preset = get_entry(name).preset()
    encoder = preset.encoder
    config = TransformerConfig(s3prl_upstream_config(preset)["transformer"])
    torch.manual_seed(0)
    transformer, head = TransformerModel(config, 80), TransformerSpecPredictionHead(config, 80)
    parameters = list(transformer.parameters()) + list(head.parameters())
    transformer.train(), head.train()
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    inputs, targets = torch.randn(batch, frames, 80), torch.randn(batch, frames, 80)
    masked = (torch.rand(batch, frames, 1) < 0.15).expand(batch, frames, 80)
    position = torch.randn(frames, encoder.hidden_size).expand(batch, frames, encoder.hidden_size)
    attention_mask = torch.ones(batch, frames)

    def step() -> None:
        hidden = transformer(inputs, position, attention_mask, output_all_encoded_layers=False)
        prediction, _ = head(hidden[-1] if isinstance(hidden, list) else hidden)
        loss = torch.nn.functional.l1_loss(prediction.masked_select(masked), targets.masked_select(masked))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 5.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return {
        "model": f"s3prl {name}",
        "setup": "s3prl",
        **time_steps(step, steps, batch, frames),
        "parameters": sum(p.numel() for p in transformer.parameters()),
    }


def time_data(name: str, corpus: str, width: int, batches: int = 10) -> dict:
    """Seconds per batch of what a DataLoader worker does for one update (read the audio, front
    end with targets, masking) on a real corpus, one thread, as the recipe's batches are made."""
    import torch

    from pretrain.data import BatchMaker, TrainingBatches, select_utterances
    from pretrain.settings import load_settings

    torch.set_num_threads(1)
    overrides = [f"corpus.root={corpus}", "data.batch_size=8", f"runner.total_steps={batches}"]
    if width:
        overrides += [
            f"model.encoder.hidden_size={width}",
            f"model.encoder.num_heads={width // 64}",
            f"model.encoder.intermediate_size={4 * width}",
        ]
    settings = load_settings(name, None, overrides)
    dataset = TrainingBatches(select_utterances(settings, settings.corpus.subsets, BatchMaker(settings).min_samples()), settings)
    frames = 0
    start = time.perf_counter()
    for index in range(batches):
        frames += int(dataset[index].lengths.sum())
    seconds = (time.perf_counter() - start) / batches
    return {"seconds_per_batch": seconds, "frames_per_batch": frames / batches}


def format_share(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f} %"


def run_in_subprocess(
    args: argparse.Namespace,
    name: str,
    python: str = sys.executable,
    width: int = 0,
    optimizer: str = "loop",
    precision: str = "float32",
) -> dict:
    command = (
        [
            python,
            __file__,
            "--worker",
            name,
            "--setup",
            args.setup,
            "--batch",
            str(args.batch),
            "--frames",
            str(args.frames),
            "--steps",
            str(args.steps),
            "--threads",
            str(args.threads),
            "--device",
            args.device,
            "--allocator",
            args.allocator,
            "--width",
            str(width),
            "--optimizer",
            optimizer,
        ]
        + (["--recompute"] if args.recompute else [])
        + ["--precision", precision]
    )
    if python != sys.executable:
        command.append("--s3prl-worker")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        return {"model": name, "error": error}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=None, help=f"presets (default: all of {PRESETS})")
    parser.add_argument(
        "--setup",
        choices=["preset", "s3prl"],
        default="preset",
        help="preset: the model as named (160-dim, R = 3); s3prl: R = 1, 80-dim in and out",
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=None, help="frames per utterance (default 1000; s3prl: 1001)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--allocator",
        choices=["default", "tuned"],
        default="tuned",
        help="tuned (as run_pretrain.py): glibc malloc keeps freed blocks for reuse, "
        "see utility/cpu_allocator.py; default: glibc as it comes",
    )
    parser.add_argument("--recompute", action="store_true", help="activation checkpointing (runner.activation_checkpointing)")
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=["float32", "bf16"],
        default=["float32"],
        help="float32, and/or bf16 autocast on the CPU (runner.cpu_bf16), each model timed in each, same run",
    )
    parser.add_argument(
        "--s3prl-python",
        help="an interpreter that imports s3prl 0.4.18 (needs --setup s3prl): "
        "each model's step is then also timed with s3prl's model, same run, same threads",
    )
    parser.add_argument(
        "--width",
        type=int,
        nargs="+",
        default=[0],
        help="encoder widths to time (heads of 64, FFN 4 x width; 0: the preset's), e.g. 256 768",
    )
    parser.add_argument(
        "--optimizer",
        nargs="+",
        choices=sorted(OPTIMIZERS),
        default=["loop"],
        help="AdamW implementations to time side by side (loop: torch's CPU default, the trainer's)",
    )
    parser.add_argument(
        "--corpus",
        help="also time a DataLoader worker's share of an update (audio, front end, "
        "masks) on this LibriSpeech-layout corpus, batch 8, one thread",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--s3prl-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.frames = args.frames or (1001 if args.setup == "s3prl" else 1000)
    if args.s3prl_python and args.setup != "s3prl":
        parser.error("--s3prl-python compares in s3prl's setting: add --setup s3prl")

    if args.worker:
        if args.allocator == "tuned":
            from utility.cpu_allocator import keep_freed_memory_for_reuse

            if not keep_freed_memory_for_reuse():
                print("note: glibc malloc could not be tuned here (not glibc, or MAM_KEEP_GLIBC_DEFAULTS=1)", file=sys.stderr)
        import torch

        torch.set_num_threads(args.threads)
        if args.s3prl_worker:
            result = measure_s3prl(args.worker, args.batch, args.frames, args.steps)
        else:
            result = measure(
                args.worker,
                args.setup,
                args.batch,
                args.frames,
                args.steps,
                args.device,
                args.recompute,
                args.precision[0] == "bf16",
                args.width[0],
                args.optimizer[0],
            )
        print(json.dumps(result))
        return []

    results = []
    print(cpu_line())  # float32 and bfloat16 speed depend on these
    print(
        f"setup={args.setup} batch={args.batch} frames={args.frames} threads={args.threads} "
        f"device={args.device} allocator={args.allocator} recompute={args.recompute}"
    )
    print(
        f"{'model':<16}{'width':>6}{'adamw':>8}{'precision':>10}{'s/step':>9}{'median':>9}{'cpu s':>9}"
        f"{'upd/min':>9}{'frames/s':>10}"
        f"{'peak GB':>9}{'GFLOP/s':>9}{'of peak':>8}  " + " ".join(f"{phase:>9}" for phase in PHASES)
    )
    runs = itertools.product(args.models or PRESETS, args.width, args.optimizer, args.precision)
    for name, width, optimizer, precision in runs:
        for python in [sys.executable] + ([args.s3prl_python] if args.s3prl_python else []):
            result = run_in_subprocess(args, name, python, width, optimizer, precision)
            results.append(result)
            label = name if python == sys.executable else f"s3prl {name}"
            shown = "autocast" if args.device.startswith("cuda") else precision
            if "error" in result:
                print(f"{label:<16} failed: {result['error']}")
                continue
            memory = result.get("peak_gpu_gb", result["peak_rss_gb"])
            phases = result.get("phase_seconds", {})
            print(
                f"{label:<16}{result.get('width', 0):>6}{result.get('optimizer', '-'):>8}{shown:>10}"
                f"{result['seconds_per_step']:>9.3f}"
                f"{result['median_seconds_per_step']:>9.3f}{result['cpu_seconds_per_step']:>9.2f}"
                f"{60 * result['steps_per_second']:>9.1f}{result['frames_per_second']:>10.0f}{memory:>9.2f}"
                f"{result.get('achieved_gflops', 0):>9.1f}{format_share(result.get('share_of_peak')):>8}  "
                + " ".join(f"{phases[phase]:>9.4f}" if phase in phases else f"{'-':>9}" for phase in PHASES),
                flush=True,
            )
    peaks = next((r["matmul_peak_gflops"] for r in results if "matmul_peak_gflops" in r), None)
    if peaks:
        print(
            f"matrix-product peak at {args.threads} threads ({PEAK_SIZE} x {PEAK_SIZE}): "
            f"float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['bfloat16']:.0f} GFLOP/s; "
            f"'of peak' is the step's speed against the peak of the precision its products used"
        )
    if args.corpus:
        for name in args.models or PRESETS[:1]:
            data = time_data(name, args.corpus, args.width[0])
            results.append({"model": name, "data": data})
            print(
                f"{name}: data loading {data['seconds_per_batch']:.3f} s per batch of 8 "
                f"({data['frames_per_batch']:.0f} frames; in DataLoader workers, beside the update)"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
