"""Upstreams from checkpoint files: ours (``upstream.checkpoint``) or s3prl's (``upstream.s3prl``).

    config, state, kind = read_upstream_checkpoint(path)   # kind: "own" or "s3prl"
    model = model_from_state(config, state, f"{kind} checkpoint {path}")
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch

from utility import cpu_features
from utility.checkpoint_file import read_checkpoint_file

from .checkpoint import FORMAT, is_own_checkpoint, read_own_checkpoint
from .config import UpstreamConfig
from .model import Upstream
from .s3prl.read import is_s3prl_checkpoint, read_s3prl_file, s3prl_config, s3prl_encoder_state, s3prl_objects

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def read_upstream_checkpoint(path: str | Path) -> tuple[UpstreamConfig, dict[str, torch.Tensor], str]:
    """Config, encoder state dict and format ('own' or 's3prl') of a checkpoint file."""
    # Our files are plain data; only a file that pickles s3prl's objects needs their stand-ins.
    data = read_s3prl_file(path) if s3prl_objects(path) else read_checkpoint_file(path)
    if is_own_checkpoint(data):
        return (*read_own_checkpoint(data, path), "own")
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


def model_from_state(
    config: UpstreamConfig,
    state: Optional[dict[str, torch.Tensor]],
    source: Optional[str],
    precision: str = "float32",
    max_frames: Optional[int] = None,
) -> Upstream:
    """The upstream ``config`` describes, with the weights ``state`` (None: random), in eval mode."""
    if max_frames is not None and config.encoder is not None:
        config.encoder.max_frames = int(max_frames)
    model = Upstream(config)
    if state is not None:
        load_state_strict(model, state, source)
    if model.encoder is not None:
        model.encoder.to(PRECISIONS[precision])
        if precision == "bfloat16" and not torch.cuda.is_available() and not cpu_features.native_bf16():
            warnings.warn(f"precision='bfloat16' runs, but {cpu_features.emulated_bf16_note()}", stacklevel=3)
    return model.eval()
