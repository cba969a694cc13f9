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


if __name__ == "__main__":
    print(_describe_entries())
