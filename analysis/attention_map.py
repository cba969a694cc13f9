"""Attention map of one utterance: a layer's attention weights (one head or the head average)
above the log-mel spectrogram on the same time axis.

    python -m analysis.attention_map -u aalbert_3L -k model.ckpt --audio utt.flac \\
        --layer 2 --head mean --output attention.png
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import utility.openmp_wait  # noqa: F401  (first: OpenMP reads its wait policy when torch loads)

import torch

from upstream import Upstream, build_upstream, read_audio
from upstream.frontend import FeatureExtractor
from upstream.config import FrontendConfig
from utility.cli import ArgumentParser, check_output_is_not_an_input, run_cli

from .plotting import plt, save_figure

FIGURE_SIZE = (8, 9)  # inches; 100 dpi -> 800 x 900 pixels


def attention_map(model: Upstream, wav: torch.Tensor, layer: int, head: Optional[int]) -> torch.Tensor:
    """(S, S) attention weights of ``layer`` (1-based, as in hidden_states) for one waveform:
    head ``head`` (0-based), or the average over heads when ``head`` is None."""
    if model.encoder is None:
        raise ValueError("plain-feature upstreams have no attention; pick a Transformer upstream")
    num_heads = model.config.encoder.num_heads
    if head is not None and not 0 <= head < num_heads:
        raise ValueError(f"head must be in [0, {num_heads - 1}] or 'mean', got {head}")
    with torch.inference_mode():
        features = model.frontend([wav])
        dtype = model.encoder.input_projection.weight.dtype
        weights = model.encoder.attention_weights(features.inputs.to(dtype), features.lengths, layer - 1)[0].float()
    return weights.mean(0) if head is None else weights[head]


def plot_attention_map(
    model: Upstream, wav: torch.Tensor, layer: int, head: Optional[int], path: str | Path, title: str = ""
) -> Path:
    weights = attention_map(model, wav, layer, head)
    step = model.downsample_rate / model.config.frontend.sample_rate  # seconds per output frame
    span = weights.shape[0] * step
    # The spectrogram: plain log-mel of the same audio (no deltas, no CMVN) at 10 ms.
    mel_config = FrontendConfig(n_mels=model.config.frontend.n_mels, delta_order=0, cmvn=False)
    mel = FeatureExtractor(mel_config)([wav]).inputs[0]
    mel = mel[: round(span / (mel_config.hop_length / mel_config.sample_rate))]

    figure, (top, bottom) = plt.subplots(2, 1, figsize=FIGURE_SIZE, sharex=True, height_ratios=[3, 1], layout="constrained")
    image = top.imshow(weights.numpy(), origin="lower", aspect="auto", cmap="viridis", extent=(0, span, 0, span))
    top.set_ylabel("query time (s)")
    head_name = "mean over heads" if head is None else f"head {head}"
    top.set_title(title or f"layer {layer} attention, {head_name}")
    figure.colorbar(image, ax=top, label="attention weight")
    spectrum = bottom.imshow(mel.T.numpy(), origin="lower", aspect="auto", cmap="magma", extent=(0, span, 0, mel.shape[1]))
    bottom.set_xlabel("key time (s)")
    bottom.set_ylabel("mel bin")
    figure.colorbar(spectrum, ax=bottom, label="log power")
    return save_figure(figure, path)


def main(argv: Optional[list[str]] = None) -> Path:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-u", "--upstream", required=True, help="upstream name, e.g. aalbert_3L")
    parser.add_argument("-k", "--ckpt", help="checkpoint (ours or s3prl's); random weights without")
    parser.add_argument("--audio", required=True, help="one wav/flac file")
    parser.add_argument("--layer", type=int, default=1, help="1-based layer number (default 1)")
    parser.add_argument("--head", default="mean", help="0-based head number, or 'mean' (default)")
    parser.add_argument("--output", default="attention.png", help="picture file (default attention.png)")
    args = parser.parse_args(argv)
    check_output_is_not_an_input(args.output, [args.ckpt, args.audio], "--output")
    model = build_upstream(args.upstream, args.ckpt)
    head = None if args.head == "mean" else int(args.head)
    if model.encoder is not None and not 1 <= args.layer <= model.config.encoder.num_layers:
        parser.error(f"--layer must be in [1, {model.config.encoder.num_layers}] for {args.upstream}")
    path = plot_attention_map(model, read_audio(args.audio), args.layer, head, args.output)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run_cli(main, memory_hint="use a shorter audio file or fewer frames")
