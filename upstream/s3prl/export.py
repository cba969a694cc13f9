"""Writing one of our Mockingjay / AALBERT checkpoints in s3prl 0.4.18's file format.

    python hub.py export -k result/pretrain/run/best.ckpt -o mockingjay_s3prl.ckpt
    # then, with s3prl 0.4.18:
    s3prl.upstream.mockingjay.hubconf.mockingjay_local(ckpt="mockingjay_s3prl.ckpt")

The file is what s3prl's 0.4 pretraining runner writes, as plain data: ``Transformer`` (the
``TransformerModel`` state dict), ``SpecHead`` (when the checkpoint has a pretraining head),
``Step``, ``Config`` (the runner's section; here a note of where the file came from) and
``Upstream_Config`` with the ``transformer``, ``task`` and ``audio`` sections s3prl's
``TransformerBuilder`` reads. It loads with s3prl's unrestricted ``torch.load``, with
``torch.load(weights_only=True)`` and with this project's importer, which gives back the same
model.

Only layouts s3prl 0.4.18 can express are written; anything else is refused with the reason:
its ``TransformerModel`` has no frame stacking (R must be 1) and no factorised input
projection, its upstream takes 16 kHz audio, its online log-mel front end always scales each
waveform to ``audio.target_level`` dB first and builds its mel filters for 201 frequency bins,
and its Kaldi front end never scales.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from utility.checkpoint_file import read_checkpoint_file, save_atomic

from ..checkpoint import FORMAT, check_own_checkpoint
from ..config import EncoderConfig, FrontendConfig, UpstreamConfig
from .keys import LAYER_ALIASES, LAYER_KEYS, PARAMS, QKV_ORDER, TOP_KEYS
from .read import is_s3prl_checkpoint, s3prl_encoder_state, s3prl_objects

S3PRL_VERSION = "0.4.18"
# Our pretraining head's modules -> s3prl's TransformerSpecPredictionHead names.
_HEAD_KEYS = {"dense": "dense", "norm": "LayerNorm", "output": "output"}
_DELTA_WINDOW = 5  # torchaudio's compute_deltas default, which both front ends use


def export_problems(config: UpstreamConfig) -> list[str]:
    """Why s3prl 0.4.18 cannot express ``config`` (empty: it can)."""
    encoder, frontend = config.encoder, config.frontend
    if encoder is None:
        return ["it is a plain-feature baseline, with no Transformer weights to export"]
    problems = []
    if encoder.downsample_rate != 1:
        problems.append(
            f"it stacks {encoder.downsample_rate} frames per step (model.encoder.downsample_rate={encoder.downsample_rate}) and "
            f"s3prl {S3PRL_VERSION}'s TransformerModel has no frame stacking (pretrain with -o model.encoder.downsample_rate=1)"
        )
    if encoder.embedding_size:
        problems.append(
            f"it has a factorised input projection (model.encoder.embedding_size={encoder.embedding_size}), which s3prl lacks"
        )
    if encoder.position_scale != 1.0 or not encoder.input_layer_norm:
        problems.append(
            f"its input layer is not s3prl's (model.encoder.position_scale={encoder.position_scale}, "
            f"model.encoder.input_layer_norm={encoder.input_layer_norm}; s3prl's are 1.0 and true)"
        )
    if frontend.sample_rate != 16000:
        problems.append(f"it takes {frontend.sample_rate} Hz audio; s3prl's upstreams take 16000 Hz")
    if frontend.corpus_stats is not None:
        problems.append(
            "it standardises features with corpus statistics (model.frontend.corpus_stats, from data.corpus_cmvn), "
            "which s3prl's front ends cannot apply"
        )
    if frontend.feature == "logmel":
        if frontend.target_level_db is None:
            problems.append(
                "its log-mel front end does not scale waveforms (model.frontend.target_level_db: null), while s3prl's "
                "always scales each one to audio.target_level dB first (pretrain with -o model.frontend.target_level_db=-25, "
                "s3prl's value)"
            )
        if frontend.n_freq != 201:
            problems.append(
                f"it has model.frontend.n_freq={frontend.n_freq}; s3prl builds its mel filters for 201 frequency bins"
            )
    else:
        if frontend.target_level_db is not None:
            problems.append(
                "its Kaldi fbank front end scales waveforms (model.frontend.target_level_db), which s3prl's never does"
            )
        options = frontend.kaldi_options
        if (frontend.win_ms, frontend.hop_ms) != (
            float(options.get("frame_length", 25.0)),
            float(options.get("frame_shift", 10.0)),
        ):
            problems.append(
                "its model.frontend.win_ms / hop_ms differ from model.frontend.kaldi_options frame_length / frame_shift"
            )
    return problems


def s3prl_audio_section(frontend: FrontendConfig) -> dict[str, Any]:
    """Our front end as s3prl's ``audio`` section (online log-mel or Kaldi-style)."""
    if frontend.feature == "kaldi_fbank":
        return {
            "kaldi": {"feat_type": "fbank", "fbank": dict(frontend.kaldi_options)},
            "delta": {"order": frontend.delta_order, "win_length": _DELTA_WINDOW},
            "cmvn": {"use_cmvn": frontend.cmvn, "eps": frontend.log_floor},
        }
    target = "linear" if frontend.target == "linear" else "mel"
    return {
        "target_level": frontend.target_level_db,
        "sample_rate": frontend.sample_rate,
        "win_ms": frontend.win_ms,
        "hop_ms": frontend.hop_ms,
        "n_freq": frontend.n_freq,
        "n_mels": frontend.n_mels,
        "eps": frontend.log_floor,
        "input": {"feat_type": "mel", "channel": 0, "log": True, "delta": frontend.delta_order, "cmvn": frontend.cmvn},
        "target": {"feat_type": target, "channel": 0, "log": True, "delta": 0, "cmvn": frontend.cmvn},
    }


def s3prl_upstream_config(config: UpstreamConfig) -> dict[str, Any]:
    """``Upstream_Config``: the sections s3prl's TransformerBuilder reads."""
    encoder = config.encoder
    return {
        "transformer": {
            "input_dim": -1,  # s3prl takes it from the front end
            "hidden_size": encoder.hidden_size,
            "num_hidden_layers": encoder.num_layers,
            "num_attention_heads": encoder.num_heads,
            "intermediate_size": encoder.intermediate_size,
            "hidden_act": "gelu",
            "hidden_dropout_prob": encoder.hidden_dropout,
            "attention_probs_dropout_prob": encoder.attention_dropout,
            "initializer_range": encoder.initializer_range,
            "layer_norm_eps": encoder.layer_norm_eps,
            "share_layer": encoder.share_layer,
            "pre_layer_norm": encoder.pre_layer_norm,
        },
        # At R = 1, s3prl's sequence_length (input frames) equals our max_frames (stacked frames).
        "task": {"loss": "L1", "sequence_length": encoder.max_frames},
        "audio": s3prl_audio_section(config.frontend),
    }


def s3prl_transformer_state(state: dict[str, torch.Tensor], config: EncoderConfig) -> dict[str, torch.Tensor]:
    """Our encoder state dict -> s3prl's ``TransformerModel`` keys: the inverse of
    ``s3prl_encoder_state``. A shared layer is listed under every index (the same tensors, as
    s3prl's ModuleList of one layer saves it); pre-LN layers also get s3prl's LayerNorm aliases."""
    out = {f"{theirs}.{param}": state[f"{ours}.{param}"] for theirs, ours in TOP_KEYS.items() for param in PARAMS}
    layers: dict[str, dict[str, torch.Tensor]] = {}  # our prefix -> s3prl layer (one, when shared)
    for index in range(config.num_layers):
        prefix = "layer" if config.share_layer else f"layers.{index}"
        if prefix not in layers:
            layers[prefix] = _s3prl_layer(state, prefix, config)
        out.update({f"encoder.layer.{index}.{key}": tensor for key, tensor in layers[prefix].items()})
    if config.pre_layer_norm:
        out.update(
            {
                f"encoder.LayerNorm.{i}.{param}": state[f"output_norms.{i}.{param}"]
                for i in range(config.num_layers + 1)
                for param in PARAMS
            }
        )
    return out


def _s3prl_layer(state: dict[str, torch.Tensor], prefix: str, config: EncoderConfig) -> dict[str, torch.Tensor]:
    """One of our layers (keys under ``prefix``) -> s3prl's layer keys (no index)."""
    layer = {}
    for param in PARAMS:
        parts = state[f"{prefix}.qkv.{param}"].split(config.hidden_size, dim=0)  # rows: query, key, value
        layer.update({f"{name}.{param}": part.clone() for name, part in zip(QKV_ORDER, parts)})
        for theirs, ours in LAYER_KEYS.items():
            if ours != "qkv":
                layer[f"{theirs}.{param}"] = state[f"{prefix}.{ours}.{param}"]
        if config.pre_layer_norm:
            layer.update({f"{alias}.{param}": layer[f"{target}.{param}"] for alias, target in LAYER_ALIASES.items()})
    return layer


def s3prl_payload(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The s3prl 0.4 file for one of our checkpoint dicts; raises if s3prl cannot express it."""
    check_own_checkpoint(data, source)
    section = data["upstream"]
    config = UpstreamConfig.from_dict(section["config"], source=f"{source}:upstream.config")
    problems = export_problems(config)
    if problems:
        raise ValueError(f"{source} cannot be written in s3prl {S3PRL_VERSION}'s format: " + "; ".join(problems))
    state = section["state_dict"]
    transformer = s3prl_transformer_state(state, config.encoder)
    # The importer must give back exactly our weights: a wrong mapping fails here, not in s3prl.
    back = s3prl_encoder_state(transformer, config.encoder)
    if back.keys() != state.keys() or any(not torch.equal(back[key], state[key]) for key in state):
        raise RuntimeError(f"{source}: the s3prl key mapping does not invert; please report this")
    metadata = dict(data.get("metadata", {}))
    payload: dict[str, Any] = {
        "Transformer": transformer,
        "Step": int(metadata.get("step") or 0),
        "Config": {"exported_from": {"format": FORMAT, "upstream": section.get("name"), "metadata": metadata}},
        "Upstream_Config": s3prl_upstream_config(config),
    }
    if data.get("head"):
        payload["SpecHead"] = {_s3prl_head_key(key): tensor for key, tensor in data["head"].items()}
    return payload


def _s3prl_head_key(key: str) -> str:
    module, _, param = key.rpartition(".")
    if module not in _HEAD_KEYS:
        raise ValueError(f"the pretraining head has a key s3prl's SpecHead has no place for: {key}")
    return f"{_HEAD_KEYS[module]}.{param}"


def export_s3prl(ckpt: str | Path, output: str | Path) -> Path:
    """Write our checkpoint ``ckpt`` as an s3prl 0.4.18 file at ``output`` (atomically)."""
    already = f"{ckpt} is already an s3prl checkpoint; s3prl loads it as it is"
    if s3prl_objects(ckpt):
        raise ValueError(already)
    data = read_checkpoint_file(ckpt)
    if is_s3prl_checkpoint(data):
        raise ValueError(already)
    return save_atomic(s3prl_payload(data, str(ckpt)), output)
