"""t-SNE pictures of upstream representations (scikit-learn's TSNE, matplotlib).

Utterance level: each utterance mean-pooled over its real frames (one chosen hidden state, or
the average of all of them), coloured by speaker.

    python -m utility.analysis.tsne -u aalbert_3L -k model.ckpt --layer 2 -o tsne_speakers.png
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from sklearn.manifold import TSNE
from tqdm import tqdm

from upstream import Upstream, build_upstream, read_audio
from utility.corpus import DEMO_ROOT, Utterance, find_utterances

from .plotting import plt, save_figure

FIGURE_SIZE = (8, 7)  # inches; 100 dpi -> 800 x 700 pixels


def select_state(hidden_states: Sequence[torch.Tensor], layer: Optional[int]) -> torch.Tensor:
    """One hidden state (index into hidden_states, 0 = input representation; negative counts
    from the end), or the average over all of them when ``layer`` is None."""
    if layer is None:
        return torch.stack(list(hidden_states)).mean(0)
    if not -len(hidden_states) <= layer < len(hidden_states):
        raise ValueError(f"layer must be in [0, {len(hidden_states) - 1}] (or negative), got {layer}")
    return hidden_states[layer]


def utterance_embeddings(model: Upstream, utterances: Sequence[Utterance], layer: Optional[int], batch_size: int = 8) -> np.ndarray:
    """(utterances, hidden) mean over each utterance's real frames."""
    pooled = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(utterances), batch_size), desc="extracting", leave=False):
            batch = utterances[start : start + batch_size]
            out = model([read_audio(utt.path) for utt in batch])
            state = select_state(out["hidden_states"], layer)
            # Padded frames are zero, so a sum over all frames is a sum over real frames.
            pooled.append(state.sum(1) / out["lengths"][:, None])
    return torch.cat(pooled).numpy()


def embed_2d(vectors: np.ndarray, seed: int) -> np.ndarray:
    """(n, d) -> (n, 2) t-SNE, deterministic for a seed; perplexity capped for small n."""
    perplexity = min(30.0, max(2.0, (len(vectors) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(vectors)


def plot_points(points: np.ndarray, labels: Sequence[str], title: str, legend_title: str, path: str | Path) -> Path:
    figure, axes = plt.subplots(figsize=FIGURE_SIZE, layout="constrained")
    names = sorted(set(labels))
    colours = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    labels = np.asarray(labels)
    for index, name in enumerate(names):
        chosen = labels == name
        axes.scatter(points[chosen, 0], points[chosen, 1], s=14, color=colours(index % colours.N), label=name)
    axes.set_xlabel("t-SNE dimension 1")
    axes.set_ylabel("t-SNE dimension 2")
    axes.set_title(title)
    axes.legend(title=legend_title, fontsize=7, ncol=2 if len(names) > 12 else 1, loc="best", markerscale=1.5)
    return save_figure(figure, path)


def plot_speaker_tsne(model: Upstream, utterances: Sequence[Utterance], layer: Optional[int], path: str | Path, seed: int = 0, title: str = "") -> Path:
    if len(utterances) < 5:
        raise ValueError(f"t-SNE needs at least 5 utterances, got {len(utterances)}")
    points = embed_2d(utterance_embeddings(model, utterances, layer), seed)
    layer_name = "average of all hidden states" if layer is None else f"hidden state {layer}"
    return plot_points(points, [utt.speaker for utt in utterances], title or f"utterances, {layer_name}", "speaker", path)


def main(argv: Optional[list[str]] = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-u", "--upstream", required=True)
    parser.add_argument("-k", "--ckpt")
    parser.add_argument("--root", default=str(DEMO_ROOT), help="LibriSpeech-layout corpus (default: demo data)")
    parser.add_argument("--subsets", nargs="+", default=["train-clean-100"])
    parser.add_argument("--layer", default="average", help="hidden-state index (0 = input), or 'average'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default="tsne_speakers.png")
    args = parser.parse_args(argv)
    model = build_upstream(args.upstream, args.ckpt)
    layer = None if args.layer == "average" else int(args.layer)
    utterances = find_utterances(args.root, args.subsets)
    path = plot_speaker_tsne(model, utterances, layer, args.output, seed=args.seed)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
