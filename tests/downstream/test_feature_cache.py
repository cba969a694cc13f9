"""The probing runner's feature cache: same states as the upstream, extracted once, keyed by
everything that changes them, damaged shards recomputed, exact resume, evaluate either way."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import soundfile
import torch

import run_downstream
from conftest import REPO, CountingUpstream, tiny_config
from downstream.feature_cache import CacheSpec, fill_cache, upstream_identity
from downstream.feature_store import DiskStore, MemoryStore
from downstream.probe_checkpoint import read_probe_checkpoint
from corpora.speaker_splits import SpeakerDataConfig
from downstream.speaker_datasets import build_speaker_datasets
from downstream.frames import FrameGrid
from upstream import Upstream, save_upstream

FEW = ["runner.total_steps=4", "runner.eval_step=2", "runner.log_step=2", "runner.batch_size=3", "runner.eval_batch_size=12"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Upstream, Path]:
    torch.manual_seed(0)
    model = Upstream(tiny_config()).eval()
    return model, save_upstream(model, tmp_path_factory.mktemp("upstream") / "tiny.ckpt", name="tiny")


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A copy of the demo corpus whose files a test may touch."""
    return Path(shutil.copytree(REPO / "data" / "demo", tmp_path / "demo"))


def speaker_data(upstream, root):
    return build_speaker_datasets(SpeakerDataConfig(root=str(root)), FrameGrid(upstream), per_frame=False)


def test_stored_states_equal_the_upstream_and_each_utterance_is_extracted_once(tiny, corpus):
    model, _ = tiny
    data = speaker_data(model, corpus)
    counting = CountingUpstream(model)
    store = MemoryStore()
    keys = fill_cache(counting, [data.train, data.dev, data.train], store, None, torch.float32, num_workers=0)
    assert counting.encoded == len(data.train) + len(data.dev)  # the repeated dataset cost nothing
    fill_cache(counting, [data.dev], store, None, torch.float32, num_workers=0)
    assert counting.encoded == len(data.train) + len(data.dev)  # all there already
    with torch.inference_mode():
        out = model([data.dev.load_wav(data.dev.sources[0])])
    stored = store.get(keys[1][0])  # (frames, states, hidden)
    assert stored.shape == (int(out["lengths"][0]), 3, 32)
    for index, state in enumerate(out["hidden_states"]):
        torch.testing.assert_close(stored[:, index], state[0], rtol=0, atol=1e-5)


def test_disk_cache_is_keyed_by_what_changes_the_features(tiny, corpus, tmp_path):
    model, ckpt = tiny
    identity = upstream_identity(model, "aalbert_3L", str(ckpt))
    folders = {
        CacheSpec(identity, None, "float16").folder_name,
        CacheSpec(identity, 2, "float16").folder_name,
        CacheSpec(identity, None, "bfloat16").folder_name,
        CacheSpec({**identity, "checkpoint_sha256": "0" * 64}, None, "float16").folder_name,
        CacheSpec(upstream_identity(Upstream(tiny_config(num_layers=3)), "aalbert_3L", None), None, "float16").folder_name,
    }
    assert len(folders) == 5
    # The random weights of an upstream without a checkpoint are part of its identity.
    torch.manual_seed(1)
    other = upstream_identity(Upstream(tiny_config()), "aalbert_3L", None)
    torch.manual_seed(2)
    assert upstream_identity(Upstream(tiny_config()), "aalbert_3L", None) != other

    data = speaker_data(model, corpus)
    counting = CountingUpstream(model)
    store = DiskStore(tmp_path / "cache", torch.float16)
    fill_cache(counting, [data.dev], store, None, torch.float16, num_workers=0)
    assert counting.encoded == len(data.dev)
    # A second run reads the shards; a changed audio file (here: its size) is new.
    path = Path(data.dev.sources[0])
    samples, rate = soundfile.read(path)
    soundfile.write(path, samples[: len(samples) // 2], rate)
    data = speaker_data(model, corpus)
    fill_cache(counting, [data.dev], DiskStore(tmp_path / "cache", torch.float16), None, torch.float16, num_workers=0)
    assert counting.encoded == len(data.dev) + 1


def test_damaged_or_half_written_shards_are_recomputed(tiny, corpus, tmp_path):
    model, _ = tiny
    data = speaker_data(model, corpus)
    counting = CountingUpstream(model)
    folder = tmp_path / "cache"
    fill_cache(counting, [data.dev], DiskStore(folder, torch.float16), None, torch.float16, num_workers=0)
    (shard,) = folder.glob("shard-*.npy")
    # A killed write leaves a temporary file and a data file without its index: neither is trusted.
    (folder / ".shard-x.npy.tmp").write_bytes(b"partial")
    shutil.copy(shard, folder / "shard-orphan.npy")
    with open(shard, "r+b") as handle:  # flip bytes inside the data
        handle.seek(-64, 2)
        handle.write(b"\xff" * 8)
    with pytest.warns(UserWarning, match=f"{shard.name} is dropped \\(checksum mismatch\\); its utterances are recomputed"):
        store = DiskStore(folder, torch.float16)
    assert len(store.index) == 0
    fill_cache(counting, [data.dev], store, None, torch.float16, num_workers=0)
    assert counting.encoded == 2 * len(data.dev)


def train(expdir: Path, *extra: str, upstream=("-u", "fbank"), task="speaker_frame") -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return run_downstream.main([*upstream, "-d", task, "-p", str(expdir), "-o", *FEW, *extra])


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_resume_with_the_cache_is_exact(tmp_path, mode):
    cache = [f"runner.feature_cache={mode}"]
    straight = train(tmp_path / "straight", *cache)
    train(tmp_path / "resumed", *cache, "runner.total_steps=2")
    resumed = run_downstream.main(["-e", str(tmp_path / "resumed"), "-o", "runner.total_steps=4"])
    a = read_probe_checkpoint(tmp_path / "straight" / "states-00000004.ckpt")["weights"]
    b = read_probe_checkpoint(tmp_path / "resumed" / "states-00000004.ckpt")["weights"]
    assert all(torch.equal(a[part][key], b[part][key]) for part in a for key in a[part])
    assert resumed["dev"] == straight["dev"] and resumed["test"] == straight["test"]
    if mode == "disk":
        assert list((tmp_path / "straight" / "feature_cache").glob("*/shard-*.json"))


def test_cached_and_uncached_runs_agree_and_evaluate_works_either_way(tmp_path, tiny):
    _, ckpt = tiny
    upstream = ["-k", str(ckpt)]
    cached = train(tmp_path / "cached", upstream=upstream, task="phone_linear")
    plain = train(tmp_path / "plain", "runner.feature_cache=off", upstream=upstream, task="phone_linear")
    assert abs(cached["test"]["accuracy"] - plain["test"]["accuracy"]) < 0.005  # float16 storage
    assert not (tmp_path / "plain" / "feature_cache").exists()
    for overrides in ([], ["-o", "runner.feature_cache=off"]):
        evaluated = run_downstream.main(["-m", "evaluate", "-e", str(tmp_path / "cached"), "-t", "dev", *overrides])
        assert abs(evaluated["dev"]["accuracy"] - cached["dev"]["accuracy"]) < 0.005
    fine_tuned = train(tmp_path / "tuned", "-f", upstream=upstream, task="phone_linear")
    assert fine_tuned["fine_tune"] and not (tmp_path / "tuned" / "feature_cache").exists()


def test_the_estimate_is_printed_and_a_layer_sweep_reuses_the_all_states_store(tmp_path, tiny, capsys):
    _, ckpt = tiny
    upstream = ["-k", str(ckpt)]
    shared = ["runner.feature_cache=disk", f"runner.feature_cache_dir={tmp_path / 'cache'}"]
    train(tmp_path / "sum", *shared, upstream=upstream)
    printed = capsys.readouterr().out
    assert "feature cache: 60 utterances, " in printed and "x 3 hidden state(s) x 32 x 2 bytes" in printed
    train(tmp_path / "layer1", *shared, "-l", "1", upstream=upstream)
    folders = sorted(p.name.split("-")[1] for p in (tmp_path / "cache").iterdir())
    assert folders == ["all"]  # the single-layer probe read the weighted sum's store
    shards = sorted((tmp_path / "cache").glob("*/shard-*.json"))
    keys = [key for shard in shards for key in json.loads(shard.read_text())["keys"]]
    assert len(keys) == len(set(keys))  # nothing was extracted twice
