"""``build_upstream``: an upstream by name, from a checkpoint file, from the published catalogue,
or from torchaudio's bundles, each resolved by its own function below."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

from utility.typed_config import check_choice



from . import presets  # noqa: F401  (registers the named upstreams)
from .catalogue import find_published, random_weights_hint
from .config import UpstreamConfig
from .files import PRECISIONS, model_from_state, read_upstream_checkpoint
from .model import Upstream
from .random_weights import random_weights_warning
from .registry import UpstreamEntry, entry_names, get_entry


def build_upstream(
    name: Optional[str] = None,
    ckpt: Optional[str | Path] = None,
    precision: str = "float32",
    max_frames: Optional[int] = None,
    pretrained: Optional[str | bool] = None,
    refresh: bool = False,
) -> Any:
    """Build a named upstream (``name``), loading ``ckpt`` if given; or, with ``name=None``,
    whatever the checkpoint describes.

    Args:
        name: a registered name (``aalbert_12L``, ``mockingjay_3L``, ``fbank``, ...). It fixes
            the family and depth; the checkpoint supplies everything else.
        ckpt: our checkpoint or an s3prl one. Without it (and without ``pretrained``), weights
            are random (with a warning naming the published checkpoints that fit).
        precision: ``float32`` or ``bfloat16`` (encoder weights and compute; outputs stay float32).
        max_frames: override the attention span in stacked frames (0: whole inputs at once).
        pretrained: a published checkpoint by s3prl name or alias (``upstream.catalogue``),
            downloaded once into torch.hub's cache; ``True``: the one that fits ``name``;
            ``False``: random weights, no warning. For torchaudio's entries, ``True`` loads the
            bundle's weights.
        refresh: download the published checkpoint again even if it is cached.

    Returns:
        an ``Upstream`` (or, for torchaudio's entries, a ``TorchaudioUpstream``; both honour
        ``upstream.model.INTERFACE``).
    """
    check_choice("precision", precision, sorted(PRECISIONS))
    if ckpt is not None and "://" in str(ckpt):
        raise ValueError(
            f"ckpt={str(ckpt)!r} is a URL; ckpt takes a local file: download it first, or load a published "
            "checkpoint by name with pretrained=NAME (python hub.py --pretrained lists them)"
        )
    entry = get_entry(name) if name is not None else None
    if entry is not None and entry.missing_requirements():
        missing = entry.missing_requirements()
        raise ImportError(f"upstream {name!r} needs {missing}: pip install {' '.join(missing)}")
    if entry is not None and entry.builder is not None:
        return _from_builder(entry, ckpt, pretrained, precision, max_frames, refresh)
    if pretrained is not None and pretrained is not False:
        if ckpt is not None:
            raise ValueError(f"give ckpt=PATH or pretrained={pretrained!r}, not both")
        return _from_catalogue(pretrained, name, precision, max_frames, refresh)
    if ckpt is not None:
        return _from_file(ckpt, entry, precision, max_frames)
    if entry is None:
        raise ValueError("give an upstream name, a checkpoint, or both")
    return _from_preset(entry, warn=pretrained is None, precision=precision, max_frames=max_frames)


def _from_builder(entry: UpstreamEntry, ckpt, pretrained, precision: str, max_frames, refresh: bool) -> Any:
    """Entries no ``UpstreamConfig`` describes (torchaudio's bundles) build themselves."""
    return entry.builder(ckpt=ckpt, pretrained=pretrained, precision=precision, max_frames=max_frames, refresh=refresh)


def _from_catalogue(pretrained: str | bool, name: Optional[str], precision: str, max_frames, refresh: bool) -> Upstream:
    """A published checkpoint by s3prl name or alias (``True``: the one that fits ``name``)."""
    published = find_published(pretrained, name)
    config, state, kind, path = published.read(refresh)
    _check_fits_entry(get_entry(published.entry), config, path)
    return model_from_state(config, state, f"{kind} checkpoint {path}", precision, max_frames)


def _from_file(ckpt: str | Path, entry: Optional[UpstreamEntry], precision: str, max_frames) -> Upstream:
    """Our checkpoint or s3prl's; under a name, it must hold that name's family and depth."""
    config, state, kind = read_upstream_checkpoint(ckpt)
    if entry is not None:
        _check_fits_entry(entry, config, ckpt)
    return model_from_state(config, state, f"{kind} checkpoint {ckpt}", precision, max_frames)


def _from_preset(entry: UpstreamEntry, warn: bool, precision: str, max_frames) -> Upstream:
    """A named preset with random weights (with a warning naming what would fit, unless ``pretrained=False``)."""
    config = entry.preset()
    if config.encoder is not None and warn:
        warnings.warn(random_weights_warning(entry.name, "pass ckpt=PATH for a trained model" + random_weights_hint(entry.name)),
                      stacklevel=4)
    return model_from_state(config, None, None, precision, max_frames)


def _check_fits_entry(entry: UpstreamEntry, config: UpstreamConfig, path: str | Path) -> None:
    if config.family != entry.family:
        raise ValueError(
            f"{path} holds a {config.family} model, not {entry.family}: load it with a {config.family} name "
            "or with the generic 'from_checkpoint' entry"
        )
    depth = config.encoder.num_layers if config.encoder is not None else None
    if entry.num_layers is not None and depth != entry.num_layers:
        fitting = f"{config.family}_{depth}L"
        hint = f"'{fitting}' or " if fitting in entry_names() else ""  # only names that exist
        raise ValueError(
            f"{path} holds a {depth}-layer {config.family} model, but '{entry.name}' has {entry.num_layers} layers; "
            f"use {hint}the generic 'from_checkpoint' entry"
        )
