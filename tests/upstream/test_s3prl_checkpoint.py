"""s3prl Mockingjay / AALBERT checkpoints: every era loads strictly, safely, and gives s3prl's
own hidden states.

The files and references under fixtures/s3prl/ were written by fixtures/make_s3prl_fixtures.py
with s3prl 0.4.18 (see its docstring); these tests never need s3prl.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from pathlib import Path

import pytest
import torch

import hub
from conftest import FIXTURES as FIXTURE_ROOT
from conftest import REPO, cross_cpu_tolerance
from upstream import build_upstream, read_audio
from utility.checkpoint_file import torch_save_format
from pretrain.model import PredictionHead, s3prl_head_state
from upstream.s3prl.read import PickledObjectStandIn, read_s3prl_file, s3prl_config
from corpora.root import DEMO_ROOT

FIXTURES = FIXTURE_ROOT / "s3prl"
FIXTURE_NAMES = sorted(path.stem for path in FIXTURES.glob("*.ckpt"))
# The parity bar; a faithful implementation lands near 2e-6 on these files.
TOLERANCE = 1e-4
# The longest sum on the way to a hidden state: the input projection of these files' front ends.
LONGEST_SUM = 160


def bar(ref: dict, key: str = "hidden_states") -> float:
    """The parity bar, or the float32 rounding bound where that is larger: the references were
    computed on another CPU (see cross_cpu_tolerance)."""
    return max(TOLERANCE, max(cross_cpu_tolerance(states, LONGEST_SUM) for states in ref[key]))


def fixture_path(name: str) -> Path:
    return FIXTURES / f"{name}.ckpt"


def reference(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.ref.pt", weights_only=True)


def max_deviation_per_state(model, ref: dict, key: str = "hidden_states") -> torch.Tensor:
    """(N + 1,) largest |ours - s3prl| of each hidden state over both utterances."""
    deviations = []
    for index, utterance in enumerate(ref["utterances"]):
        with torch.inference_mode():
            out = model([read_audio(DEMO_ROOT / f"{utterance}.flac")])
        assert int(out["lengths"][0]) == ref["num_frames"][index]
        ours = torch.stack(out["hidden_states"])[:, 0, ref["frames"][index]]
        deviations.append((ours - ref[key][index]).abs().amax(dim=(1, 2)))
    return torch.stack(deviations).amax(dim=0)


def test_fixtures_cover_every_layout():
    assert len(FIXTURE_NAMES) == 7
    eras = {name: read_s3prl_file(fixture_path(name)) for name in FIXTURE_NAMES}
    assert isinstance(eras["v010_settings_dict"]["Settings"], dict)
    assert isinstance(eras["v010_settings_namespace_aalbert"]["Settings"], PickledObjectStandIn)
    assert "transformer" in eras["v020_config_aalbert"]["Config"]
    assert "transformer" not in eras["v04_upstream_config"]["Config"]  # the runner's config
    assert "encoder.layer.attention.self.query.weight" in eras["v020_aalbert_unindexed"]["Transformer"]
    assert "encoder.layer.1.attention.self.query.weight" in eras["v04_kaldi_fbank_aalbert"]["Transformer"]
    assert "encoder.layer.0.output.LayerNorm.gamma" in eras["v020_config_aalbert"]["Transformer"]
    assert [name for name in FIXTURE_NAMES if torch_save_format(fixture_path(name)) == "legacy"] == [
        "v010_settings_dict",
        "v020_config_aalbert",
    ]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_matches_s3prl_expert_at_every_layer(name):
    model = hub.from_checkpoint(str(fixture_path(name)))
    assert model.num_hidden_states == 3 and model.downsample_rate == 160  # what s3prl reports
    ref = reference(name)
    deviation = max_deviation_per_state(model, ref)
    assert deviation.shape == (3,)
    assert deviation.max() < bar(ref), f"{name}: per-layer max deviation {deviation.tolist()}"


def test_torch_hub_loads_s3prl_files():
    path = str(fixture_path("v010_settings_dict"))
    model = torch.hub.load(str(REPO), "from_checkpoint", source="local", ckpt=path)
    wav = read_audio(DEMO_ROOT / f"{reference('v010_settings_dict')['utterances'][0]}.flac")
    with torch.inference_mode():
        assert torch.equal(model([wav])["last_hidden_state"], build_upstream(None, path)([wav])["last_hidden_state"])


def test_long_inputs_are_chunked_like_s3prl():
    """s3prl cuts an input longer than sequence_length with torch.chunk (equal chunks)."""
    ref = reference("v04_upstream_config")
    model = build_upstream(None, fixture_path("v04_upstream_config"), max_frames=ref["chunked_sequence_length"])
    assert max(ref["num_frames"]) > 2 * ref["chunked_sequence_length"]
    deviation = max_deviation_per_state(model, ref, key="chunked_hidden_states")
    assert deviation.max() < bar(ref, "chunked_hidden_states"), deviation.tolist()


@pytest.mark.parametrize(
    "name, family, pre_layer_norm, feature",
    [
        ("v010_settings_dict", "mockingjay", False, "logmel"),
        ("v010_settings_namespace_aalbert", "aalbert", False, "logmel"),
        ("v020_aalbert_unindexed", "aalbert", False, "logmel"),
        ("v04_pre_layer_norm", "mockingjay", True, "logmel"),
        ("v04_kaldi_fbank_aalbert", "aalbert", False, "kaldi_fbank"),
    ],
)
def test_file_settings_are_honoured(name, family, pre_layer_norm, feature):
    config = s3prl_config(read_s3prl_file(fixture_path(name)))
    assert config.family == family
    assert (config.encoder.input_dim, config.encoder.downsample_rate, config.encoder.num_layers) == (80, 1, 2)
    assert config.encoder.pre_layer_norm is pre_layer_norm
    assert config.encoder.max_frames == 1500  # task.sequence_length
    assert config.frontend.feature == feature and config.frontend.feature_dim == 80
    assert config.frontend.target_level_db == (None if feature == "kaldi_fbank" else -25.0)


def test_spec_head_maps_onto_prediction_head():
    for name in ("v010_settings_dict", "v04_upstream_config"):  # gamma/beta and weight/bias names
        data = read_s3prl_file(fixture_path(name))
        head = PredictionHead(s3prl_config(data).encoder, target_dim=80)
        head.load_state_dict(s3prl_head_state(data["SpecHead"]), strict=True)
        assert not torch.equal(head.norm.weight, torch.ones(32))


def test_named_entry_must_fit_family_and_depth():
    with pytest.raises(
        ValueError, match="2-layer aalbert model, but 'aalbert_3L' has 3 layers; use the generic 'from_checkpoint'"
    ):
        build_upstream("aalbert_3L", fixture_path("v010_settings_namespace_aalbert"))
    with pytest.raises(ValueError, match="holds a mockingjay model, not aalbert"):
        hub.aalbert_3L(ckpt=str(fixture_path("v04_upstream_config")))
    with pytest.raises(ValueError, match="holds a aalbert model, not mockingjay"):
        hub.mockingjay_3L(ckpt=str(fixture_path("v020_aalbert_unindexed")))


def _resave(tmp_path: Path, name: str, edit) -> Path:
    """The fixture's weights and model config as a plain s3prl 0.4-layout file, after ``edit``."""
    data = read_s3prl_file(fixture_path(name))
    state = dict(data["Transformer"])
    edit(state)
    path = tmp_path / f"{name}_edited.ckpt"
    torch.save({"Transformer": state, "Upstream_Config": data["Upstream_Config"]}, path)
    return path


def test_unknown_and_missing_keys_are_both_listed(tmp_path):
    def rename(state):
        state["encoder.layer.0.intermediate.dense_typo.weight"] = state.pop("encoder.layer.0.intermediate.dense.weight")

    with pytest.raises(ValueError) as error:
        build_upstream(None, _resave(tmp_path, "v04_upstream_config", rename))
    assert "unknown keys ['encoder.layer.0.intermediate.dense_typo.weight']" in str(error.value)
    assert "missing keys ['encoder.layer.0.intermediate.dense.weight']" in str(error.value)

    def add_third_layer(state):
        state.update({key.replace("layer.1.", "layer.2."): value for key, value in state.items() if ".layer.1." in key})

    with pytest.raises(
        ValueError, match=r"unknown keys \['encoder.layer.2.attention.output.LayerNorm.bias', .*\]; missing keys \[\]"
    ):
        build_upstream(None, _resave(tmp_path, "v04_upstream_config", add_third_layer))


def test_shared_layer_copies_must_agree(tmp_path):
    def perturb_second_copy(state):
        key = "encoder.layer.1.output.dense.bias"
        state[key] = state[key] + 1.0

    with pytest.raises(ValueError, match="share_layer but encoder.layer.1 differs from encoder.layer.0 in ffn_out.bias"):
        build_upstream(None, _resave(tmp_path, "v04_kaldi_fbank_aalbert", perturb_second_copy))


def test_truncated_legacy_file_is_refused_clearly(tmp_path):
    original = fixture_path("v010_settings_dict").read_bytes()
    for cut in (300, len(original) // 2):
        path = tmp_path / f"cut_{cut}.ckpt"
        path.write_bytes(original[:cut])
        with pytest.raises(ValueError, match="corrupt or truncated"):
            build_upstream(None, path)


class _Payload:
    """Unpickling this would run os.system and create a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_s3prl_file_with_another_global_is_refused_without_running(tmp_path, legacy):
    marker = tmp_path / "payload_ran"
    data = read_s3prl_file(fixture_path("v04_upstream_config"))
    path = tmp_path / "evil.ckpt"
    payload = {"Transformer": data["Transformer"], "Upstream_Config": data["Upstream_Config"], "Args": _Payload(marker)}
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ValueError, match="refused for safety"):
        build_upstream(None, path)
    assert not marker.exists()


class _TrapSchedule:
    """Pickled as ``optimizers._TrapSchedule``; really unpickled, its __setstate__ creates a file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __setstate__(self, state):
        Path(state["marker"]).touch()


class _TrapArgs:
    """Pickled as a call of ``optimizers._TrapArgs``; really unpickled, its __init__ creates a file."""

    def __init__(self, marker: str, armed: bool = False):
        if armed:
            Path(marker).touch()
        self.marker = marker

    def __reduce__(self):
        return (type(self), (self.marker, True))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_namespace_and_scheduler_stand_ins_never_run_code(tmp_path, monkeypatch, legacy):
    fake_optimizers = types.ModuleType("optimizers")
    for cls in (_TrapSchedule, _TrapArgs):
        monkeypatch.setattr(cls, "__module__", "optimizers")
        setattr(fake_optimizers, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, "optimizers", fake_optimizers)
    schedule_marker, args_marker = tmp_path / "setstate_ran", tmp_path / "init_ran"
    data = read_s3prl_file(fixture_path("v04_upstream_config"))
    payload = {
        "Transformer": data["Transformer"],
        "Upstream_Config": data["Upstream_Config"],
        "Optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "schedule": _TrapSchedule(schedule_marker)}]},
        "Args": _TrapArgs(str(args_marker)),
        "Paras": argparse.Namespace(seed=1337, config="config.yaml"),
    }
    path = tmp_path / "trap.ckpt"
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)

    loaded = read_s3prl_file(path)
    model = build_upstream(None, path)
    assert model.num_hidden_states == 3
    assert not schedule_marker.exists() and not args_marker.exists()
    schedule = loaded["Optimizer"]["param_groups"][0]["schedule"]
    assert isinstance(schedule, PickledObjectStandIn) and schedule.pickled_state == {"marker": str(schedule_marker)}
    assert isinstance(loaded["Args"], PickledObjectStandIn) and loaded["Args"].pickled_args == (str(args_marker), True)
    assert loaded["Paras"].pickled_state == {"seed": 1337, "config": "config.yaml"}

    # The traps are armed: an unrestricted load runs both.
    torch.load(path, weights_only=False)
    assert schedule_marker.exists() and args_marker.exists()
