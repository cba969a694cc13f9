"""The encoder and the upstream contract: sizes, shapes, padding, chunking, precision."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from upstream import Upstream, build_upstream
from upstream.encoder import TransformerEncoder, sinusoid_positions

PAPER_PARAMETER_COUNTS = {
    "aalbert_3L": 7_458_816,
    "aalbert_6L": 7_458_816,
    "aalbert_12L": 7_458_816,
    "mockingjay_3L": 21_634_560,
    "mockingjay_6L": 42_898_176,
    "mockingjay_12L": 85_425_408,
}


@pytest.mark.parametrize("name", sorted(PAPER_PARAMETER_COUNTS))
def test_preset_parameter_counts_are_exact(name):
    with pytest.warns(UserWarning, match="RANDOM"):
        model = build_upstream(name)
    assert sum(p.numel() for p in model.encoder.parameters()) == PAPER_PARAMETER_COUNTS[name]
    assert model.downsample_rate == 480
    assert model.num_hidden_states == int(name.split("_")[1][:-1]) + 1


def test_aalbert_applies_one_layer_object_at_every_depth():
    encoder = TransformerEncoder(tiny_config("aalbert", num_layers=3).encoder)
    assert encoder.layer_at(0) is encoder.layer_at(2)
    mockingjay = TransformerEncoder(tiny_config("mockingjay", num_layers=3).encoder)
    assert mockingjay.layer_at(0) is not mockingjay.layer_at(2)


def test_hidden_states_shapes_and_lengths(tiny_upstream, demo_wavs):
    with torch.inference_mode():
        out = tiny_upstream(demo_wavs)
    frames = [(wav.numel() // 160 + 1) // 3 for wav in demo_wavs]
    assert out["lengths"].tolist() == frames
    assert len(out["hidden_states"]) == 3
    for state in out["hidden_states"]:
        assert state.shape == (len(demo_wavs), max(frames), 32)
    assert out["last_hidden_state"] is out["hidden_states"][-1]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"share_layer": False},
        {"pre_layer_norm": True},
        {"embedding_size": 16},
        {"max_frames": 7},  # several chunks per utterance
        {"position_scale": 0.25, "input_layer_norm": False},
    ],
    ids=["aalbert", "mockingjay", "pre_ln", "factorised", "chunked", "input_layer"],
)
def test_batch_equals_each_item_alone(fields, demo_wavs):
    torch.manual_seed(0)
    model = Upstream(tiny_config(**fields)).eval()
    wavs = demo_wavs + [demo_wavs[0][:4000], demo_wavs[1][:400]]
    with torch.inference_mode():
        batch = model(wavs)
        for index, wav in enumerate(wavs):
            alone = model([wav])
            length = int(alone["lengths"][0])
            assert int(batch["lengths"][index]) == length
            for batched_state, single_state in zip(batch["hidden_states"], alone["hidden_states"]):
                assert torch.allclose(batched_state[index, :length], single_state[0, :length], atol=1e-5, rtol=0)
                assert not batched_state[index, length:].any(), "padded frames must be zero"


@pytest.mark.parametrize("layer_norm", [True, False])
@pytest.mark.parametrize("scale", [1.0, 0.0625, 0.0])
def test_input_representation_is_the_projection_plus_scaled_positions(scale, layer_norm):
    torch.manual_seed(0)
    encoder = TransformerEncoder(tiny_config(position_scale=scale, input_layer_norm=layer_norm).encoder).eval()
    features = torch.randn(2, 12, encoder.config.input_dim)
    with torch.inference_mode():
        states, _ = encoder(features, torch.tensor([12, 12]))
        stacked = features.reshape(2, 4, -1)  # R = 3
        expected = encoder.input_projection(stacked) + scale * sinusoid_positions(4, 32, features.device)
        if layer_norm:
            expected = torch.nn.functional.layer_norm(expected, (32,), eps=encoder.config.layer_norm_eps)
    assert isinstance(encoder.input_norm, torch.nn.LayerNorm) == layer_norm
    # Values of order 1 (the LayerNorm's output, or projection + positions): 1e-5 is about 100
    # float32 ulps there, room for kernels that sum in another order on another CPU.
    assert torch.allclose(states[0], expected, atol=1e-5, rtol=0)


def test_chunks_are_encoded_independently(demo_wavs):
    torch.manual_seed(0)
    model = Upstream(tiny_config(max_frames=10)).eval()
    wav = demo_wavs[0]
    with torch.inference_mode():
        whole = model([wav])["last_hidden_state"][0]
        # The second chunk alone: its 30 raw frames start at sample 30 * 160.
        features = model.frontend([wav])
        states, _ = model.encoder(features.inputs[:, 30:60], torch.tensor([30]))
    assert torch.allclose(whole[10:20], states[-1][0], atol=1e-5)


def test_ten_minute_waveform_extracts_in_chunks():
    torch.manual_seed(0)
    model = Upstream(tiny_config(max_frames=500)).eval()
    wav = 0.1 * torch.randn(16000 * 600)
    with torch.inference_mode():
        out = model([wav])
    assert out["lengths"].tolist() == [(wav.numel() // 160 + 1) // 3]
    assert torch.isfinite(out["last_hidden_state"]).all()


def test_bfloat16_encoder_stays_close_to_float32(tiny_upstream, demo_wavs):
    with torch.inference_mode():
        reference = tiny_upstream(demo_wavs[:1])["last_hidden_state"]
        tiny_upstream.encoder.to(torch.bfloat16)
        fast = tiny_upstream(demo_wavs[:1])["last_hidden_state"]
    assert fast.dtype == torch.float32
    deviation = (fast - reference).abs().max().item()
    assert 0 < deviation < 0.1


def test_baselines_return_the_features_themselves(demo_wavs):
    for name, dim in (("fbank", 240), ("mel", 160)):
        model = build_upstream(name)
        with torch.inference_mode():
            out = model(demo_wavs[:2])
        assert model.downsample_rate == 160
        assert len(out["hidden_states"]) == 1 and out["last_hidden_state"].shape[-1] == dim


def test_gradients_flow_when_fine_tuning(tiny_upstream, demo_wavs):
    tiny_upstream.train()
    out = tiny_upstream(demo_wavs[:2])
    out["last_hidden_state"].pow(2).mean().backward()
    grads = [p.grad for p in tiny_upstream.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_attention_weights_reproduce_the_layer_output(tiny_upstream, demo_wavs):
    """Weights from attention_weights, applied to the values, give the same context as SDPA."""
    encoder = tiny_upstream.encoder
    with torch.inference_mode():
        features = tiny_upstream.frontend(demo_wavs[:2])
        weights = encoder.attention_weights(features.inputs, features.lengths, layer_index=1)
        states, lengths = encoder(features.inputs, features.lengths)
        layer = encoder.layer_at(1)
        _, _, v = layer._heads(states[1])
        context = (weights @ v).transpose(1, 2).reshape(2, -1, 32)
        x = layer.attention_norm(states[1] + layer.attention_output(context))
        expected = layer.ffn_norm(x + layer.ffn_out(torch.nn.functional.gelu(layer.ffn_in(x))))
    short = int(lengths[1])
    assert weights.shape == (2, 4, states[0].shape[1], states[0].shape[1])
    assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5)
    assert not weights[1, :, :, short:].any(), "padded keys get no attention"
    assert torch.allclose(expected[1, :short], states[2][1, :short], atol=1e-5)
    with pytest.raises(ValueError, match=r"layer_index must be in \[0, 1\]"):
        encoder.attention_weights(features.inputs, features.lengths, layer_index=2)
