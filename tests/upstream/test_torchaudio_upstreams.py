"""torchaudio's wav2vec 2.0 / HuBERT / WavLM Base as upstreams: the architecture of the bundles,
hidden states that are torchaudio's own, lengths and the frame grid of the CNN, batch-invariant
outputs, clear errors without network, and a probe through run_downstream.py. All with random
weights: nothing is downloaded."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchaudio

import hub
import run_downstream
from upstream import build_upstream, get_entry
from upstream.model import INTERFACE
from upstream.torchaudio_ssl import TORCHAUDIO_MODELS, TorchaudioUpstream

NAMES = sorted(TORCHAUDIO_MODELS)


def random_model(name: str, seed: int = 0) -> TorchaudioUpstream:
    torch.manual_seed(seed)
    return build_upstream(name, pretrained=False)


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_equal_torchaudios_builders_and_bundles(name):
    spec = TORCHAUDIO_MODELS[name]
    model = random_model(name)
    builder = getattr(torchaudio.models, spec.builder)()
    assert parameters(model) == parameters(builder)
    # The bundle's own architecture (what pretrained=True loads into) has the same size.
    params = getattr(torchaudio.pipelines, spec.bundle)._params
    from_bundle = (
        torchaudio.models.wavlm_model(**params) if spec.relative_positions else torchaudio.models.wav2vec2_model(**params)
    )
    assert parameters(from_bundle) == parameters(builder)
    assert spec.file_name == getattr(torchaudio.pipelines, spec.bundle)._path
    assert model.num_hidden_states == get_entry(name).num_layers + 1 == 13
    assert model.hidden_sizes == (768,) * 13


@pytest.mark.parametrize("name", ["wav2vec2_base", "wavlm_base_plus"])
def test_hidden_states_are_torchaudios_and_do_not_depend_on_the_batch(name, demo_wavs):
    model = random_model(name)
    demo_wavs = [wav[:length] for wav, length in zip(demo_wavs, (32000, 24321, 16000))]  # short, different lengths
    assert all(hasattr(model, member) for member in INTERFACE)
    with torch.inference_mode():
        batch = model(demo_wavs)
        for row, wav in enumerate(demo_wavs):
            alone = model([wav])
            length = int(batch["lengths"][row])
            assert int(alone["lengths"][0]) == length
            for a, b in zip(alone["hidden_states"], batch["hidden_states"]):
                assert (a[0] - b[row, :length]).abs().max() < 1e-5
                assert not b[row, length:].any()  # padded frames are zero
        # One item alone: the states are the projection, then torchaudio's own layer outputs.
        states = model([demo_wavs[0]])["hidden_states"]
        features, _ = model.encoder.feature_extractor(demo_wavs[0][None], None)
        assert torch.equal(states[0], model.encoder.encoder.feature_projection(features))
        layers, _ = model.encoder.extract_features(demo_wavs[0][None])
        assert len(layers) == len(states) - 1
        for ours, theirs in zip(states[1:], layers):
            assert torch.equal(ours, theirs)


def test_frame_grid_follows_the_cnn():
    model = random_model("hubert_base")
    assert model.downsample_rate == 320 and model.min_samples == 400 and model.first_frame_centre == 200.0
    lengths = [400, 401, 719, 720, 721, 1040, 4000, 16000, 16001, 23456]
    with torch.inference_mode():
        actual = [model.encoder.feature_extractor(torch.zeros(1, n), None)[0].shape[1] for n in lengths]
        assert model.num_frames(torch.tensor(lengths)).tolist() == actual
        assert model([torch.randn(n) for n in lengths[:3]])["lengths"].tolist() == actual[:3]
    with pytest.raises(ValueError, match="waveform 0 has 399 samples, shorter than one analysis window"):
        model([torch.randn(399)])


def test_weights_from_a_state_dict_file_and_clear_errors(tmp_path, monkeypatch):
    source = random_model("hubert_base", seed=1)
    torch.save(source.encoder.state_dict(), tmp_path / "hubert.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # weights from a file: no random-weights warning
        loaded = hub.hubert_base(str(tmp_path / "hubert.pth"))
    assert all(torch.equal(a, b) for a, b in zip(loaded.encoder.state_dict().values(), source.encoder.state_dict().values()))
    with pytest.raises(ValueError, match=r"is not a state dict of torchaudio's wav2vec2_base\(\) model"):
        build_upstream("wav2vec2_base", _other_file(tmp_path))
    with pytest.warns(UserWarning, match="wavlm_base_plus: no checkpoint given, so the weights are RANDOM; pass pretrained=True"):
        build_upstream("wavlm_base_plus")
    with pytest.raises(ValueError, match="pretrained must be True"):
        build_upstream("wav2vec2_base", pretrained="mockingjay_960hr")
    with pytest.raises(ValueError, match="max_frames applies to Mockingjay/AALBERT only"):
        build_upstream("wav2vec2_base", max_frames=100)
    with pytest.raises(ValueError, match="cannot be pretrained here"):
        get_entry("wav2vec2_base").preset()
    # No network: the error names the URL, where to put the file, and ckpt=PATH.
    hub_dir = tmp_path / "hub"
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(hub_dir))
    monkeypatch.setenv("MAM_OFFLINE", "1")
    try:
        with pytest.raises(RuntimeError) as error:
            build_upstream("wav2vec2_base", pretrained=True)
    finally:
        torch.hub.set_dir(previous)
    message = str(error.value)
    assert "https://download.pytorch.org/torchaudio/models/wav2vec2_fairseq_base_ls960.pth" in message
    assert str(hub_dir / "checkpoints" / "wav2vec2_fairseq_base_ls960.pth") in message and "ckpt=PATH" in message


def _other_file(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"surprise.weight": torch.zeros(1)}, path)
    return path


def test_probe_trains_on_wav2vec2_through_run_downstream(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights, as the test intends
        results = run_downstream.main(
            [
                "-u",
                "wav2vec2_base",
                "-d",
                "speaker_utterance",
                "-p",
                str(tmp_path / "exp"),
                "-o",
                "runner.total_steps=2",
                "runner.eval_step=2",
                "runner.log_step=1",
            ]
        )
    assert results["steps"] == 2
    assert len(results["layer_weights"]) == 13
    assert 0.0 <= results["test"]["accuracy"] <= 1.0


def test_a_file_of_another_comparison_model_is_refused_naming_its_entry(tmp_path):
    """Issue 19, case 9: wav2vec 2.0 and HuBERT share every key and shape, so their bundle file
    names tell them apart; WavLM's keys differ, so its architecture does."""
    from upstream.torchaudio_ssl import check_file_is_of, fitting_models

    hubert_file = tmp_path / TORCHAUDIO_MODELS["hubert_base"].file_name
    torch.save({"not": torch.zeros(1)}, hubert_file)
    with pytest.raises(
        ValueError,
        match=rf"{hubert_file} holds torchaudio's HUBERT_BASE model \(hubert\), not WAV2VEC2_BASE: "
        r"load it with -u hubert_base",
    ):
        build_upstream("wav2vec2_base", hubert_file)
    with torch.device("meta"):
        states = {name: getattr(torchaudio.models, model.builder)().state_dict() for name, model in TORCHAUDIO_MODELS.items()}
    assert [m.name for m in fitting_models(states["wavlm_base_plus"])] == ["wavlm_base_plus"]
    assert [m.name for m in fitting_models(states["hubert_base"])] == ["wav2vec2_base", "hubert_base"]
    with pytest.raises(
        ValueError,
        match=r"w.pth holds torchaudio's WAVLM_BASE_PLUS model \(wavlm\), not WAV2VEC2_BASE: load it with -u wavlm_base_plus",
    ):
        check_file_is_of(TORCHAUDIO_MODELS["wav2vec2_base"], tmp_path / "w.pth", states["wavlm_base_plus"])
    with pytest.raises(ValueError, match=r"not WAVLM_BASE_PLUS: load it with -u wav2vec2_base or -u hubert_base"):
        check_file_is_of(TORCHAUDIO_MODELS["wavlm_base_plus"], tmp_path / "h.pth", states["hubert_base"])
    check_file_is_of(TORCHAUDIO_MODELS["hubert_base"], tmp_path / "h.pth", states["hubert_base"])  # fits: no error
