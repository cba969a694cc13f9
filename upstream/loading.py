"""Building upstreams by name, from our checkpoints or s3prl's, and saving them."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from utility import cpu_features

from . import presets  # noqa: F401  (registers the named upstreams)
from .catalogue import PublishedCheckpoint, find_published, random_weights_hint
from .checkpoint import FORMAT, VERSION, check_own_checkpoint, is_own_checkpoint, save_atomic
from .config import UpstreamConfig, check_choice
from .download import fetch
from .model import Upstream
from .random_weights import random_weights_warning
from .registry import UpstreamEntry, entry_names, get_entry
from .s3prl_checkpoint import is_s3prl_checkpoint, read_s3prl_file, s3prl_config, s3prl_encoder_state

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def read_upstream_checkpoint(path: str | Path) -> tuple[UpstreamConfig, dict[str, torch.Tensor], str]:
    """Config, encoder state dict and format ('own' or 's3prl') of a checkpoint file."""
    data = read_s3prl_file(path)
    if is_own_checkpoint(data):
        check_own_checkpoint(data, path)
        section = data["upstream"]
        return UpstreamConfig.from_dict(section["config"], source=f"{path}:upstream.config"), section["state_dict"], "own"
    if is_s3prl_checkpoint(data):
        config = s3prl_config(data)
        return config, s3prl_encoder_state(data["Transformer"], config.encoder), "s3prl"
    raise ValueError(
        f"{path} is neither a {FORMAT} checkpoint nor an s3prl Mockingjay/AALBERT checkpoint "
        f"(top-level keys: {sorted(map(str, data))[:10]})"
    )


def load_state_strict(model: Upstream, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load that names both the missing and the unexpected keys."""
    if model.encoder is None:
        if state:
            raise ValueError(f"{source}: a plain-feature upstream has no weights, but the file has {len(state)}")
        return
    expected = set(model.encoder.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{source} does not fit the model: missing keys {missing}; unexpected keys {unexpected}")
    try:
        model.encoder.load_state_dict(state, strict=True)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{source} does not fit the model: {error}") from error


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


def _read_published(published: PublishedCheckpoint, refresh: bool) -> tuple[UpstreamConfig, dict[str, torch.Tensor], str, Path]:
    """Fetch a published checkpoint (once) and read it; a cached file that does not load is
    reported with its path and the way to fetch it again."""
    path = fetch(published, refresh=refresh)
    try:
        config, state, kind = read_upstream_checkpoint(path)
    except ValueError as error:
        raise ValueError(
            f"the cached file of published checkpoint '{published.short_name}' does not load: {path} ({error}); "
            "download it again with refresh=True, or delete the file"
        ) from error
    return config, state, kind, path


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
    entry = get_entry(name) if name is not None else None
    if entry is not None and entry.missing_requirements():
        missing = entry.missing_requirements()
        raise ImportError(f"upstream {name!r} needs {missing}: pip install {' '.join(missing)}")
    if entry is not None and entry.builder is not None:
        return entry.builder(ckpt=ckpt, pretrained=pretrained, precision=precision, max_frames=max_frames, refresh=refresh)
    published = None
    if pretrained is not None and pretrained is not False:
        if ckpt is not None:
            raise ValueError(f"give ckpt=PATH or pretrained={pretrained!r}, not both")
        published = find_published(pretrained, name)
        entry = get_entry(published.entry)
    if ckpt is None and published is None:
        if entry is None:
            raise ValueError("give an upstream name, a checkpoint, or both")
        config, state, source = entry.preset(), None, None
        if config.encoder is not None and pretrained is None:
            warnings.warn(random_weights_warning(name, "pass ckpt=PATH for a trained model" + random_weights_hint(name)), stacklevel=3)
    else:
        if published is not None:
            config, state, kind, ckpt = _read_published(published, refresh)
        else:
            config, state, kind = read_upstream_checkpoint(ckpt)
        source = f"{kind} checkpoint {ckpt}"
        if entry is not None:
            _check_fits_entry(entry, config, ckpt)
    if max_frames is not None and config.encoder is not None:
        config.encoder.max_frames = int(max_frames)
    model = Upstream(config)
    if state is not None:
        load_state_strict(model, state, source)
    if model.encoder is not None:
        model.encoder.to(PRECISIONS[precision])
        if precision == "bfloat16" and not torch.cuda.is_available() and not cpu_features.native_bf16():
            warnings.warn(f"{name or 'from_checkpoint'}: precision='bfloat16' runs, but {cpu_features.emulated_bf16_note()}", stacklevel=2)
    return model.eval()


def upstream_checkpoint(model: Upstream, name: str, metadata: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The plain-data checkpoint dict for ``model`` (extend it with training state as needed)."""
    state = {} if model.encoder is None else {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()}
    return {
        "format": FORMAT,
        "version": VERSION,
        "upstream": {"name": name, "config": model.config.to_dict(), "state_dict": state},
        "metadata": dict(metadata or {}),
    }


def save_upstream(model: Upstream, path: str | Path, name: str, metadata: Optional[dict[str, Any]] = None) -> Path:
    """Write ``model`` as a loadable checkpoint, atomically."""
    return save_atomic(upstream_checkpoint(model, name, metadata), path)
