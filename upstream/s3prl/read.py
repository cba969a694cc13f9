"""Reading s3prl Mockingjay / AALBERT checkpoints without executing anything from them.

s3prl files (v0.1.0, v0.2.0, 0.4.x) are ``torch.save``d dicts that also pickle an
``argparse.Namespace`` and learning-rate schedule objects from a module named ``optimizers``.
They are read with torch's own restricted (``weights_only``) unpickler, where exactly those
class names are mapped to an inert stand-in that only stores its pickled state: no constructor,
``__reduce__`` or ``__setstate__`` from the file runs, and any other global is refused. The
names are found by scanning the pickle opcodes first (zip files and the legacy pre-zip format
that files from before torch 1.6 use).

Translation is two small pure steps: the file's config -> :class:`UpstreamConfig`, then the
state-dict keys -> ours through the commented table below, which raises with both the unknown
and the missing keys; the load that follows is strict.
"""

from __future__ import annotations

import pickletools
import re
from pathlib import Path
from typing import Any, Optional

import torch

from utility.checkpoint_file import read_checkpoint_file, torch_save_format

from ..config import EncoderConfig, FrontendConfig, UpstreamConfig
from .keys import LAYER_ALIASES, LAYER_KEYS, PARAMS, QKV_ORDER, TOP_KEYS, UNINDEXED_LAYER, rename_gamma_beta

# Pickled globals that s3prl files carry and that we map to an inert stand-in.
_STANDIN_GLOBALS = re.compile(r"^(argparse\.Namespace|optimizers\.\w+|s3prl\.optimizers\.\w+)$")


class PickledObjectStandIn:
    """Takes the place of a pickled Namespace or scheduler: keeps the state, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.pickled_args = args

    def __setstate__(self, state: Any) -> None:
        self.pickled_state = state


def s3prl_objects(path: str | Path) -> list[str]:
    """The s3prl objects (Namespace, schedulers) a file pickles: none in plain-data files like ours."""
    return [name for name in pickled_globals(Path(path)) if _STANDIN_GLOBALS.match(name)]


def read_s3prl_file(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint that may hold s3prl's pickled Namespace/scheduler objects."""
    names = s3prl_objects(path)
    with torch.serialization.safe_globals([(PickledObjectStandIn, name) for name in names]):
        return read_checkpoint_file(path)


# A legacy (pre-zip) torch.save file is four pickles (magic number, protocol version, system
# info, the object) followed by the raw storage bytes.
_LEGACY_PICKLES = 4


def pickled_globals(path: Path) -> list[str]:
    """The ``module.name`` globals a torch.save file would import, read from its pickle opcodes
    without unpickling anything. Only decides which names get the stand-in: a name missed here
    is simply refused by the restricted unpickler."""
    if torch_save_format(path) == "zip":
        try:
            return torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except RuntimeError:  # a damaged archive: torch.load reports it
            return []
    # torch's scanner reads zip files only; pickletools walks the legacy pickles' opcodes.
    names: list[str] = []
    with open(path, "rb") as stream:
        try:
            for _ in range(_LEGACY_PICKLES):
                for opcode, arg, _ in pickletools.genops(stream):
                    if opcode.name == "GLOBAL":
                        names.append(arg.replace(" ", "."))
        except ValueError:  # a truncated file: keep what was found, torch.load reports the rest
            pass
    return names


def is_s3prl_checkpoint(data: dict[str, Any]) -> bool:
    return "Transformer" in data


def find_s3prl_config(data: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The dict holding the ``transformer`` section, and where it was found (by s3prl era)."""
    candidates = [
        ("Upstream_Config", data.get("Upstream_Config")),  # 0.4.x (there 'Config' is the runner's)
        ("Config", data.get("Config")),  # v0.2.0
        ("Settings.Config", _settings_config(data.get("Settings"))),  # v0.1.0
    ]
    for where, config in candidates:
        if isinstance(config, dict) and "transformer" in config:
            return config, where
    raise ValueError(
        "s3prl checkpoint has no model config: looked for a dict with a 'transformer' section in "
        "'Upstream_Config', 'Config' and 'Settings.Config'"
    )


def _settings_config(settings: Any) -> Optional[dict[str, Any]]:
    if isinstance(settings, dict):
        return settings.get("Config")
    state = getattr(settings, "pickled_state", None)  # a pickled Namespace
    return state.get("Config") if isinstance(state, dict) else None


def _frontend_from_s3prl(audio: Any, where: str) -> FrontendConfig:
    if not isinstance(audio, dict):
        raise ValueError(
            f"s3prl checkpoint ({where}) has no 'audio' section: the model was trained on precomputed "
            "features, so it cannot run on waveforms"
        )
    if "kaldi" in audio:
        kaldi = audio["kaldi"]
        if kaldi.get("feat_type", "fbank") != "fbank":
            raise ValueError(f"s3prl Kaldi features {kaldi.get('feat_type')!r} are not supported (only 'fbank')")
        delta = dict(audio.get("delta", {}))
        order = int(delta.pop("order", 2))  # s3prl's Delta defaults to order 2
        if delta.get("win_length", 5) != 5 or set(delta) - {"win_length"}:
            raise ValueError(f"s3prl delta options {audio.get('delta')} are not supported (only order, win_length=5)")
        options = dict(kaldi.get("fbank", {}))
        cmvn = audio.get("cmvn", {})
        return FrontendConfig(
            feature="kaldi_fbank",
            # Frame counts follow the fbank window and shift (torchaudio's defaults: 25 / 10 ms).
            win_ms=float(options.get("frame_length", 25.0)),
            hop_ms=float(options.get("frame_shift", 10.0)),
            kaldi_options=options,
            delta_order=order,
            cmvn=bool(cmvn.get("use_cmvn", False)),
            log_floor=float(cmvn.get("eps", 1e-10)),  # only CMVN's epsilon here: fbank takes its own log
        )
    feature = audio.get("input", {})
    if feature.get("feat_type") != "mel" or not feature.get("log", False):
        raise ValueError(f"s3prl input features {feature} are not supported (only log mel)")
    target = audio.get("target", feature)
    return FrontendConfig(
        feature="logmel",
        sample_rate=int(audio.get("sample_rate", 16000)),
        win_ms=float(audio.get("win_ms", 25)),
        hop_ms=float(audio.get("hop_ms", 10)),
        n_freq=int(audio.get("n_freq", 201)),
        n_mels=int(audio.get("n_mels", 40)),
        delta_order=int(feature.get("delta", 0)),
        cmvn=bool(feature.get("cmvn", False)),
        log_floor=float(audio.get("eps", 1e-10)),  # s3prl's preprocessor: log floor and CMVN epsilon
        target_level_db=float(audio["target_level"]) if audio.get("target_level") is not None else None,
        target="linear" if target.get("feat_type") == "linear" else "mel",
    )


def s3prl_config(data: dict[str, Any]) -> UpstreamConfig:
    """Translate an s3prl file's settings (front end, model, chunk length) to ours."""
    config, where = find_s3prl_config(data)
    model = config["transformer"]
    if str(model.get("hidden_act", "gelu")) != "gelu":
        raise ValueError(f"s3prl model uses hidden_act={model['hidden_act']!r}; only 'gelu' is supported")
    frontend = _frontend_from_s3prl(config.get("audio"), where)
    rate = int(model.get("downsample_rate", 1))  # only v0.1.0 files stack frames
    weight = data["Transformer"].get("input_representations.spec_transform.weight")
    if weight is None:
        raise ValueError("s3prl checkpoint has no input_representations.spec_transform.weight")
    input_dim = weight.shape[1] // rate
    if input_dim != frontend.feature_dim:
        raise ValueError(
            f"s3prl checkpoint's input layer takes {input_dim}-dim frames but its audio config gives "
            f"{frontend.feature_dim}-dim features"
        )
    sequence_length = int(config.get("task", {}).get("sequence_length", 0))
    share = bool(model.get("share_layer", False))
    return UpstreamConfig(
        family="aalbert" if share else "mockingjay",
        frontend=frontend,
        encoder=EncoderConfig(
            input_dim=input_dim,
            downsample_rate=rate,
            hidden_size=int(model["hidden_size"]),
            num_layers=int(model["num_hidden_layers"]),
            num_heads=int(model["num_attention_heads"]),
            intermediate_size=int(model["intermediate_size"]),
            share_layer=share,
            pre_layer_norm=bool(model.get("pre_layer_norm", False)),
            hidden_dropout=float(model.get("hidden_dropout_prob", 0.1)),
            attention_dropout=float(model.get("attention_probs_dropout_prob", 0.1)),
            layer_norm_eps=float(model.get("layer_norm_eps", 1e-12)),
            initializer_range=float(model.get("initializer_range", 0.02)),
            # s3prl counts its sequence_length in input frames; ours counts stacked frames.
            max_frames=sequence_length // rate if sequence_length > 0 else 0,
        ),
    )


def _keys(modules: list[str]) -> set[str]:
    return {f"{module}.{param}" for module in modules for param in PARAMS}


def s3prl_encoder_state(state: dict[str, torch.Tensor], config: EncoderConfig) -> dict[str, torch.Tensor]:
    """Map an s3prl ``Transformer`` state dict to our encoder's keys, strictly: keys the table
    does not expect for this config, or expected keys that are absent, raise with both lists.

    Shared-layer files list the layer under every index (one storage); all copies must agree.
    An early branch stored one unindexed layer (``encoder.layer.attention...``).
    """
    renamed: dict[str, torch.Tensor] = {}
    for raw_key, tensor in state.items():
        key = rename_gamma_beta(raw_key)
        if key in renamed:
            raise ValueError(f"s3prl checkpoint holds {key} twice (also as {raw_key})")
        renamed[key] = tensor
    unindexed = any(UNINDEXED_LAYER.match(key) for key in renamed)
    if unindexed and not config.share_layer:
        raise ValueError("s3prl checkpoint has an unindexed (shared) layer but its config says share_layer: False")
    layers = ["encoder.layer"] if unindexed else [f"encoder.layer.{i}" for i in range(config.num_layers)]
    expected = _keys(list(TOP_KEYS)) | _keys([f"{layer}.{module}" for layer in layers for module in LAYER_KEYS])
    aliases: set[str] = set()
    if config.pre_layer_norm:
        expected |= _keys([f"encoder.LayerNorm.{i}" for i in range(config.num_layers + 1)])
        aliases = _keys([f"{layer}.{alias}" for layer in layers for alias in LAYER_ALIASES])
    unknown = sorted(set(renamed) - expected - aliases)
    missing = sorted(expected - set(renamed))
    if unknown or missing:
        shape = f"{config.num_layers}-layer{' shared-layer' if config.share_layer else ''}"
        prenorm = " pre-LN" if config.pre_layer_norm else ""
        raise ValueError(
            f"s3prl checkpoint's Transformer weights do not fit the {shape}{prenorm} model its config describes: "
            f"unknown keys {unknown}; missing keys {missing}"
        )

    out = {f"{ours}.{param}": renamed[f"{theirs}.{param}"] for theirs, ours in TOP_KEYS.items() for param in PARAMS}
    if config.pre_layer_norm:
        out.update(
            {
                f"output_norms.{i}.{param}": renamed[f"encoder.LayerNorm.{i}.{param}"]
                for i in range(config.num_layers + 1)
                for param in PARAMS
            }
        )
    for index, layer in enumerate(layers):
        mapped = _map_layer(renamed, layer)
        if not config.share_layer:
            out.update({f"layers.{index}.{name}": tensor for name, tensor in mapped.items()})
            continue
        for name, tensor in mapped.items():
            previous = out.setdefault(f"layer.{name}", tensor)
            if not torch.equal(previous, tensor):
                raise ValueError(f"s3prl checkpoint says share_layer but {layer} differs from encoder.layer.0 in {name}")
    return out


def _map_layer(state: dict[str, torch.Tensor], layer: str) -> dict[str, torch.Tensor]:
    """One layer's s3prl keys (prefix ``layer``) -> our layer keys; checks the pre-LN aliases."""
    for alias, target in LAYER_ALIASES.items():
        for param in PARAMS:
            alias_tensor = state.get(f"{layer}.{alias}.{param}")
            if alias_tensor is not None and not torch.equal(alias_tensor, state[f"{layer}.{target}.{param}"]):
                raise ValueError(f"s3prl checkpoint: {layer}.{alias}.{param} differs from {layer}.{target}.{param}")
    mapped = {}
    for param in PARAMS:
        mapped[f"qkv.{param}"] = torch.cat([state[f"{layer}.{name}.{param}"] for name in QKV_ORDER], dim=0)
    for theirs, ours in LAYER_KEYS.items():
        if ours != "qkv":
            mapped.update({f"{ours}.{param}": state[f"{layer}.{theirs}.{param}"] for param in PARAMS})
    return mapped
