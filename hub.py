"""torch.hub entries, generated from the upstream registry.

    model = torch.hub.load(REPO, "aalbert_12L", source="local", ckpt="path/to/file.ckpt")
    with torch.inference_mode():
        out = model([wav])          # wav: 1-D float tensor, 16 kHz
    out["hidden_states"]            # N + 1 tensors of (batch, frames, hidden)

Every entry takes ``ckpt`` (ours or s3prl's), ``precision`` ("float32" or "bfloat16") and
``max_frames`` (attention span in stacked frames; longer inputs are chunked).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from upstream import Upstream, build_upstream, entry_names, get_entry

_ENTRY_DOC = """{description}

Args:
    ckpt: checkpoint path (this project's format or an s3prl {family} file). Without it the
        weights are random and a warning says so.
    precision: "float32" (default) or "bfloat16" for faster CPU/GPU inference.
    max_frames: attention span in stacked frames (0: attend over the whole input).

Returns:
    Upstream: ``model(wavs)`` maps a list of 1-D 16 kHz float tensors to a dict with
    ``hidden_states`` ({states} tensors), ``last_hidden_state`` and ``lengths``.
"""


def _make_entry(name: str) -> Callable[..., Upstream]:
    entry = get_entry(name)

    def load(ckpt: Optional[str] = None, **options: Any) -> Upstream:
        return build_upstream(name, ckpt, **options)

    states = f"{entry.num_layers + 1}" if entry.num_layers else "1"
    load.__name__ = load.__qualname__ = name
    load.__doc__ = _ENTRY_DOC.format(description=entry.description, family=entry.family, states=states)
    return load


def from_checkpoint(ckpt: str, **options: Any) -> Upstream:
    """Build whatever model a checkpoint describes (ours or s3prl's), any family or depth.

    Takes the same options as the named entries (precision, max_frames).
    """
    return build_upstream(None, ckpt, **options)


for _name in entry_names():
    globals()[_name] = _make_entry(_name)

__all__ = [*entry_names(), "from_checkpoint"]


def _describe_entries() -> str:
    """One line per entry: name and summary (torch.hub.list/help read GitHub repos only)."""
    lines = [f"{name:16s} {get_entry(name).description.splitlines()[0]}" for name in entry_names()]
    lines.append(f"{'from_checkpoint':16s} {from_checkpoint.__doc__.splitlines()[0]}")
    return "\n".join(lines)


def _main() -> None:
    """``python hub.py``: list the entries; ``python hub.py NAME [-k CKPT] AUDIO...``: extract."""
    import argparse

    import torch

    from upstream import read_audio

    parser = argparse.ArgumentParser(description="List the upstreams, or extract hidden states from audio files.")
    parser.add_argument("name", nargs="?", help="upstream name (omit to list them)")
    parser.add_argument("audio", nargs="*", help="wav/flac files")
    parser.add_argument("-k", "--ckpt", help="checkpoint (ours or s3prl's)")
    args = parser.parse_args()
    if args.name is None:
        print(_describe_entries())
        return
    if not args.audio:
        parser.error("give at least one audio file to extract")
    model = build_upstream(args.name, args.ckpt)
    with torch.inference_mode():
        out = model([read_audio(path) for path in args.audio])
    print(f"{args.name}: {len(out['hidden_states'])} hidden states, one frame per {model.downsample_rate} samples")
    for path, length in zip(args.audio, out["lengths"].tolist()):
        print(f"  {path}: {length} frames")
    for index, state in enumerate(out["hidden_states"]):
        real = state[0, : out["lengths"][0]]
        print(f"  state {index:2d}: {tuple(state.shape)}  first item mean {real.mean():+.4f} std {real.std():.4f}")


if __name__ == "__main__":
    _main()
