"""t-SNE pictures of upstream representations (scikit-learn's TSNE, matplotlib).

Utterance level: each utterance mean-pooled over its real frames (one chosen hidden state, or
the average of all of them), coloured by speaker. Frame level: a seeded random subset of
frames, each coloured by the broad class of its phone (labels mapped to the upstream's frame
rate by downstream's FrameGrid).

    python -m analysis.tsne -u aalbert_3L -k model.ckpt --layer 2 --output tsne_speakers.png
    python -m analysis.tsne -u fbank --level frame -o data.root=data/demo --output tsne_phones.png

``-o KEY=VALUE`` chooses the data, with the phone tasks' key names (``data.root``,
``data.label_dir``, ``data.phones``) and ``data.subsets``; ``--output`` is the picture file.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import utility.openmp_wait  # noqa: F401  (first: OpenMP reads its wait policy when torch loads)

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from downstream.frames import FrameGrid
from corpora.phone_splits import read_phone_names
from upstream import Upstream, build_upstream, read_audio
from utility.cli import (
    ArgumentParser,
    add_moved_option,
    add_override_option,
    check_output_is_not_an_input,
    refuse_output_as_override,
    run_cli,
)
from utility.config import apply_overrides, defaults
from utility.typed_config import dataclass_from_dict
from corpora.index import find_utterances
from corpora.label_frames import read_frame_labels
from corpora.root import DEMO_ROOT
from corpora.utterance import Utterance

from .phone_classes import broad_class_names
from .plotting import plt, save_figure

FIGURE_SIZE = (8, 7)  # inches; 100 dpi -> 800 x 700 pixels


@dataclass
class TsneData:
    """What ``-o data.KEY=VALUE`` sets: the pictured utterances and, at frame level, their labels."""

    root: Optional[str] = None  # LibriSpeech-layout corpus; None: the demo corpus in data/demo
    subsets: list[str] = field(default_factory=lambda: ["train-clean-100"])
    label_dir: Optional[str] = None  # frame level: 10 ms labels SUBSET.frames.txt; default ROOT/alignments
    phones: Optional[str] = None  # frame level: 'name index' phone list; default ROOT/phones.txt


def data_settings(overrides: Sequence[str]) -> TsneData:
    """``-o`` overrides -> typed data settings (unknown keys named with the known ones)."""
    config = apply_overrides({"data": defaults(TsneData)}, overrides)
    return dataclass_from_dict(TsneData, config["data"], "data")


def select_state(hidden_states: Sequence[torch.Tensor], layer: Optional[int]) -> torch.Tensor:
    """One hidden state (index into hidden_states, 0 = input representation; negative counts
    from the end), or the average over all of them when ``layer`` is None."""
    if layer is None:
        return torch.stack(list(hidden_states)).mean(0)
    if not -len(hidden_states) <= layer < len(hidden_states):
        raise ValueError(f"layer must be in [0, {len(hidden_states) - 1}] (or negative), got {layer}")
    return hidden_states[layer]


def utterance_embeddings(
    model: Upstream, utterances: Sequence[Utterance], layer: Optional[int], batch_size: int = 8
) -> np.ndarray:
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


PCA_COMPONENTS = 50  # scikit-learn's advice: reduce to about 50 dimensions before t-SNE


def embed_2d(vectors: np.ndarray, seed: int) -> np.ndarray:
    """(n, d) -> (n, 2) t-SNE, deterministic for a seed; perplexity capped for small n.

    Each dimension is standardised first, then reduced with PCA: pooled Transformer states sit
    at offsets several times larger than their variation between utterances, and without this
    one or two large dimensions decide every distance (the picture collapses to a thin line).
    """
    standardized = StandardScaler().fit_transform(vectors)
    components = min(PCA_COMPONENTS, *standardized.shape)
    reduced = PCA(n_components=components, random_state=seed).fit_transform(standardized)
    perplexity = min(30.0, max(2.0, (len(vectors) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)


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


def plot_speaker_tsne(
    model: Upstream, utterances: Sequence[Utterance], layer: Optional[int], path: str | Path, seed: int = 0, title: str = ""
) -> Path:
    if len(utterances) < 5:
        raise ValueError(f"t-SNE needs at least 5 utterances, got {len(utterances)}")
    points = embed_2d(utterance_embeddings(model, utterances, layer), seed)
    layer_name = "average of all hidden states" if layer is None else f"hidden state {layer}"
    return plot_points(points, [utt.speaker for utt in utterances], title or f"utterances, {layer_name}", "speaker", path)


def frame_embeddings(
    model: Upstream,
    utterances: Sequence[Utterance],
    labels: dict[str, list[int]],
    layer: Optional[int],
    max_frames: int,
    seed: int,
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, hidden) frames drawn at random (``seed``) from all real frames, at most
    ``max_frames``, and (n,) the 10 ms label under each, aligned by :class:`FrameGrid`."""
    missing = [utt.utt_id for utt in utterances if utt.utt_id not in labels]
    if missing:
        raise ValueError(f"no frame labels for {len(missing)} utterance(s), e.g. {missing[0]}; check --labels")
    grid = FrameGrid(model)
    vectors, classes = [], []
    with torch.inference_mode():
        for start in tqdm(range(0, len(utterances), batch_size), desc="extracting frames", leave=False):
            batch = utterances[start : start + batch_size]
            wavs = [read_audio(utt.path) for utt in batch]
            out = model(wavs)
            state = select_state(out["hidden_states"], layer)
            for row, (utt, wav) in enumerate(zip(batch, wavs)):
                count = int(out["lengths"][row])
                vectors.append(state[row, :count])
                classes.append(grid.align(torch.tensor(labels[utt.utt_id]), wav.numel(), utt.utt_id))
    vectors_all, classes_all = torch.cat(vectors).numpy(), torch.cat(classes).numpy()
    chosen = np.sort(np.random.default_rng(seed).choice(len(vectors_all), size=min(max_frames, len(vectors_all)), replace=False))
    return vectors_all[chosen], classes_all[chosen]


def plot_phone_tsne(
    model: Upstream,
    utterances: Sequence[Utterance],
    labels: dict[str, list[int]],
    phone_names: list[str],
    layer: Optional[int],
    path: str | Path,
    max_frames: int = 2000,
    seed: int = 0,
    title: str = "",
) -> Path:
    vectors, classes = frame_embeddings(model, utterances, labels, layer, max_frames, seed)
    if len(vectors) < 5:
        raise ValueError(f"t-SNE needs at least 5 frames, got {len(vectors)}")
    broad = np.asarray(broad_class_names(phone_names))[classes]
    layer_name = "average of all hidden states" if layer is None else f"hidden state {layer}"
    return plot_points(
        embed_2d(vectors, seed), list(broad), title or f"{len(vectors)} frames, {layer_name}", "broad phone class", path
    )


def corpus_label_files(data: TsneData, root: Path) -> tuple[list[Path], Path]:
    """Frame level: the 10 ms label files of ``data.subsets`` and the phone list."""
    label_files = [Path(data.label_dir or root / "alignments") / f"{subset}.frames.txt" for subset in data.subsets]
    return label_files, Path(data.phones) if data.phones else root / "phones.txt"


def plot_corpus_tsne(
    model: Upstream,
    data: TsneData,
    level: str,
    layer: Optional[int],
    path: str | Path,
    max_frames: int = 2000,
    seed: int = 0,
    title: str = "",
    max_utterances: Optional[int] = None,
) -> Path:
    """The picture of ``data``'s utterances (at most ``max_utterances``, evenly spaced over the
    corpus's order so that every speaker keeps some) at ``level`` 'utterance' (by speaker) or
    'frame' (by broad phone class)."""
    root = Path(data.root) if data.root else DEMO_ROOT
    utterances = find_utterances(root, data.subsets, progress=False)
    if max_utterances is not None and len(utterances) > max_utterances:
        utterances = [utterances[i * len(utterances) // max_utterances] for i in range(max_utterances)]
    if level == "utterance":
        return plot_speaker_tsne(model, utterances, layer, path, seed=seed, title=title)
    label_files, phones_file = corpus_label_files(data, root)
    labels = {}
    for label_file in label_files:
        labels.update(read_frame_labels(label_file))
    return plot_phone_tsne(model, utterances, labels, read_phone_names(phones_file), layer, path, max_frames, seed, title)


def main(argv: Optional[list[str]] = None) -> Path:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-u", "--upstream", required=True)
    parser.add_argument("-k", "--ckpt")
    add_override_option(
        parser, help="data settings, e.g. -o data.root=/data/LibriSpeech data.subsets=[dev-clean] (default: demo data)"
    )
    parser.add_argument("--layer", default="average", help="hidden-state index (0 = input), or 'average'")
    parser.add_argument(
        "--level",
        choices=["utterance", "frame"],
        default="utterance",
        help="utterance: coloured by speaker; frame: by broad phone class",
    )
    parser.add_argument("--max-frames", type=int, default=2000, help="frame level: frames drawn at random (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="tsne.png", help="picture file (default tsne.png)")
    for flag, key in (
        ("--root", "root=DIR"),
        ("--subsets", "subsets=[A,B]"),
        ("--labels", "label_dir=DIR"),
        ("--phones", "phones=FILE"),
    ):
        add_moved_option(parser, flag, f"-o data.{key}")
    args = parser.parse_args(argv)
    refuse_output_as_override(parser, args.override, "--output")
    data = data_settings(args.override)
    root = Path(data.root) if data.root else DEMO_ROOT
    model = build_upstream(args.upstream, args.ckpt)
    layer = None if args.layer == "average" else int(args.layer)
    inputs = [args.ckpt, *(utt.path for utt in find_utterances(root, data.subsets))]
    if args.level == "frame":
        label_files, phones_file = corpus_label_files(data, root)
        inputs += [*label_files, phones_file]
    check_output_is_not_an_input(args.output, inputs, "--output")
    path = plot_corpus_tsne(model, data, args.level, layer, args.output, args.max_frames, args.seed)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run_cli(main, memory_hint="use a shorter audio file or fewer frames")
