"""Export to s3prl 0.4.18's format: files s3prl itself wrote come back key for key and tensor
for tensor after a trip through our format, the export loads with weights_only and with our
importer (same model, same hidden states), and layouts s3prl cannot express are refused.

The check against s3prl 0.4.18's own loader (hidden states within 1e-5) needs s3prl and lives
in scripts/s3prl_export_check.py; these tests never import s3prl.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import hub
from conftest import FIXTURES, tiny_config
from pretrain.model import s3prl_head_state
from upstream import EncoderConfig, FrontendConfig, Upstream, UpstreamConfig, build_upstream, save_upstream
from utility.checkpoint_file import save_atomic
from upstream.s3prl.export import export_s3prl
from upstream.checkpoint import upstream_checkpoint
from upstream.s3prl.read import read_s3prl_file

# Files written by s3prl's own TransformerModel / SpecHead (tests/fixtures/README.md).
S3PRL_FILES = ["v04_upstream_config", "v04_pre_layer_norm", "v04_kaldi_fbank_aalbert", "v020_config_aalbert"]
S3PRL_LOG_MEL = dict(feature="logmel", n_mels=80, delta_order=0, cmvn=True, target_level_db=-25.0, target="linear")


def ours_from_s3prl(name: str, path: Path) -> tuple[Path, dict]:
    """The s3prl fixture as our checkpoint (with its prediction head, if it has one)."""
    original = read_s3prl_file(FIXTURES / "s3prl" / f"{name}.ckpt")
    payload = upstream_checkpoint(build_upstream(None, FIXTURES / "s3prl" / f"{name}.ckpt"), "from_s3prl", {"step": 7})
    if "SpecHead" in original:
        payload["head"] = s3prl_head_state(original["SpecHead"])
    save_atomic(payload, path)
    return path, original


def hidden_states(model, wavs) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        return model(wavs)["hidden_states"]


@pytest.mark.parametrize("name", S3PRL_FILES)
def test_s3prl_files_survive_a_trip_through_our_format(name, tmp_path, demo_wavs):
    ours, original = ours_from_s3prl(name, tmp_path / "ours.ckpt")
    exported = export_s3prl(ours, tmp_path / "s3prl.ckpt")
    data = torch.load(exported, weights_only=True)  # plain data: no pickled objects
    # gamma/beta (v0.2.0) become weight/bias, the names s3prl 0.4's modules register.
    expected = {
        key.replace(".gamma", ".weight").replace(".beta", ".bias"): value for key, value in original["Transformer"].items()
    }
    assert data["Transformer"].keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(data["Transformer"][key], tensor), key
    if "SpecHead" in original:
        assert data["SpecHead"].keys() == original["SpecHead"].keys()
        assert all(torch.equal(data["SpecHead"][key], tensor) for key, tensor in original["SpecHead"].items())
    assert data["Step"] == 7
    config = data["Upstream_Config"]
    source = original.get("Upstream_Config") or original["Config"]
    written = {key: value for key, value in config["transformer"].items() if key != "input_dim"}
    assert written == {key: source["transformer"][key] for key in written}
    assert config["task"]["sequence_length"] == source["task"]["sequence_length"]
    if "kaldi" in source["audio"]:
        assert config["audio"]["kaldi"] == {"feat_type": "fbank", "fbank": source["audio"]["kaldi"]["fbank"]}
    else:
        assert config["audio"]["input"] == source["audio"]["input"]
        assert config["audio"]["target_level"] == source["audio"]["target_level"]
    assert "transformer" not in data["Config"]  # 0.4 layout: Config is the runner's section


@pytest.mark.parametrize(
    "frontend, fields",
    [
        (S3PRL_LOG_MEL, {}),
        (S3PRL_LOG_MEL, {"share_layer": True, "max_frames": 50}),
        (dict(S3PRL_LOG_MEL, delta_order=1, target="mel"), {"pre_layer_norm": True}),
        (dict(feature="kaldi_fbank", delta_order=2, cmvn=True, kaldi_options={"num_mel_bins": 40}), {"share_layer": True}),
    ],
    ids=["mockingjay", "aalbert_chunked", "pre_ln_delta", "kaldi_fbank"],
)
def test_export_round_trip_gives_the_same_model(frontend, fields, tmp_path, demo_wavs):
    frontend = FrontendConfig(**frontend)
    config = tiny_config(
        "aalbert" if fields.get("share_layer") else "mockingjay", input_dim=frontend.feature_dim, downsample_rate=1, **fields
    )
    config.frontend = frontend
    torch.manual_seed(3)
    model = Upstream(config).eval()
    with torch.no_grad():
        for param in model.encoder.parameters():
            param.add_(0.1 * torch.randn_like(param))  # no LayerNorm at 1 / 0, no zero bias
    ours = save_upstream(model, tmp_path / "ours.ckpt", name="tiny")
    hub._main(["export", "-k", str(ours), "-o", str(tmp_path / "s3prl.ckpt")])
    data = torch.load(tmp_path / "s3prl.ckpt", weights_only=True)
    if config.encoder.share_layer:  # one layer, listed under every index, one storage
        pointers = {data["Transformer"][f"encoder.layer.{i}.output.dense.weight"].data_ptr() for i in range(2)}
        assert len(pointers) == 1
    back = build_upstream(None, tmp_path / "s3prl.ckpt")
    assert back.config.to_dict() == model.config.to_dict()
    for a, b in zip(hidden_states(model, demo_wavs), hidden_states(back, demo_wavs)):
        assert torch.equal(a, b)


def test_layouts_s3prl_cannot_express_are_refused_with_the_reason(tmp_path):
    preset = save_upstream(Upstream(tiny_config()), tmp_path / "preset.ckpt", name="aalbert_2L")
    with pytest.raises(
        ValueError,
        match=r"cannot be written in s3prl 0.4.18's format: it stacks 3 frames per step .*"
        r"pretrain with -o model.encoder.downsample_rate=1\); its log-mel front end does not scale waveforms "
        r"\(model.frontend.target_level_db: null\).* -o model.frontend.target_level_db=-25",
    ):
        export_s3prl(preset, tmp_path / "out.ckpt")
    factorised = tiny_config(downsample_rate=1, input_dim=80, embedding_size=16)
    factorised.frontend = FrontendConfig(**S3PRL_LOG_MEL)
    path = save_upstream(Upstream(factorised), tmp_path / "factorised.ckpt", name="x")
    with pytest.raises(ValueError, match="factorised input projection"):
        export_s3prl(path, tmp_path / "out.ckpt")
    standardised = tiny_config(downsample_rate=1, input_dim=80)
    stats = {"input_mean": [0.0] * 80, "input_std": [1.0] * 80, "target_mean": [0.0] * 201, "target_std": [1.0] * 201}
    standardised.frontend = FrontendConfig(**{**S3PRL_LOG_MEL, "cmvn": False, "corpus_stats": stats})
    path = save_upstream(Upstream(standardised), tmp_path / "standardised.ckpt", name="x")
    with pytest.raises(ValueError, match=r"corpus statistics \(model.frontend.corpus_stats, from data.corpus_cmvn\)"):
        export_s3prl(path, tmp_path / "out.ckpt")
    for field in ({"position_scale": 0.0625}, {"input_layer_norm": False}):
        other_input = tiny_config(downsample_rate=1, input_dim=80, **field)
        other_input.frontend = FrontendConfig(**S3PRL_LOG_MEL)
        path = save_upstream(Upstream(other_input), tmp_path / "input_layer.ckpt", name="x")
        with pytest.raises(ValueError, match=r"its input layer is not s3prl's \(model.encoder.position_scale="):
            export_s3prl(path, tmp_path / "out.ckpt")
    baseline = save_upstream(build_upstream("fbank"), tmp_path / "fbank.ckpt", name="fbank")
    with pytest.raises(ValueError, match="plain-feature baseline, with no Transformer weights"):
        export_s3prl(baseline, tmp_path / "out.ckpt")
    with pytest.raises(ValueError, match="already an s3prl checkpoint"):
        export_s3prl(FIXTURES / "s3prl" / "v04_upstream_config.ckpt", tmp_path / "out.ckpt")
    assert not (tmp_path / "out.ckpt").exists()


def test_encoder_config_fields_all_reach_the_file():
    """A new EncoderConfig field must be considered here: exported, refused, or not s3prl's."""
    handled = {
        "input_dim",
        "downsample_rate",
        "hidden_size",
        "num_layers",
        "num_heads",
        "intermediate_size",
        "share_layer",
        "pre_layer_norm",
        "embedding_size",
        "hidden_dropout",
        "attention_dropout",
        "layer_norm_eps",
        "initializer_range",
        "position_scale",
        "input_layer_norm",
        "max_frames",
    }
    assert set(EncoderConfig.__dataclass_fields__) == handled
    # stack belongs to plain-feature baselines, which are refused (no Transformer weights).
    assert UpstreamConfig.__dataclass_fields__.keys() == {"family", "frontend", "encoder", "stack"}
