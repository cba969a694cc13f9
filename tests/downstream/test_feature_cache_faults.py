"""The feature cache under faults: files rewritten behind its back, shards that do not belong,
damaged shard indexes, a full disk, long files, Ctrl-C during the first pass, bad settings."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import downstream.feature_cache as feature_cache
import downstream.feature_store as feature_store
import run_downstream
import upstream.encoder as encoder_module
from conftest import CountingUpstream, tiny_config
from downstream.base import ProbeDataset
from downstream.feature_cache import fill_cache, plan_cache
from downstream.feature_store import DiskStore, MemoryStore
from faults import write_wav
from upstream import Upstream
from corpora.audio_check import AudioScreen
from utility.cli import run_cli
from corpora.index import find_utterances
from utility.interrupt import TrainingInterrupted, stop_at_step_boundary


@pytest.fixture(scope="module")
def model() -> Upstream:
    torch.manual_seed(0)
    return Upstream(tiny_config()).eval()


def noise_corpus(folder: Path, count: int = 4, seconds: float = 1.0, subtype: str = "PCM_16") -> list[Path]:
    """``count`` WAV files of noise (fixed size for a given length and subtype)."""
    rng = np.random.default_rng(0)
    return [write_wav(folder / f"utt{i}.wav", rng.normal(0, 0.1, int(16000 * seconds)).astype(np.float32), subtype)
            for i in range(count)]


def dataset_of(paths: list[Path]) -> ProbeDataset:
    labels = [torch.tensor(0)] * len(paths)
    return ProbeDataset([p.stem for p in paths], [str(p) for p in paths], labels, [np.array([0])] * len(paths))


def rewrite_keeping_size_and_mtime(path: Path, samples: np.ndarray, subtype: str) -> None:
    """What ``cp -p``, ``touch -r`` or rsync leave: other bytes, same size, same mtime."""
    before = path.stat()
    soundfile.write(path, samples, 16000, subtype=subtype)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def shard_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("shard-*"))


# ---------------------------------------------------------------------------------------------
# Case 1: a file rewritten at the same size with its mtime put back


def test_a_same_size_rewrite_with_its_mtime_put_back_is_extracted_again(model, tmp_path):
    paths = noise_corpus(tmp_path / "audio")
    counting = CountingUpstream(model)
    fill_cache(counting, [dataset_of(paths)], DiskStore(tmp_path / "cache", torch.float16), None, torch.float16, 0)
    assert counting.encoded == len(paths)
    rewrite_keeping_size_and_mtime(paths[1], np.random.default_rng(1).normal(0, 0.1, 16000).astype(np.float32), "PCM_16")
    store = DiskStore(tmp_path / "cache", torch.float16)
    (keys,) = fill_cache(counting, [dataset_of(paths)], store, None, torch.float16, 0)
    assert counting.encoded == len(paths) + 1  # only the rewritten file
    with torch.inference_mode():
        fresh = model([torch.from_numpy(soundfile.read(paths[1], dtype="float32")[0])])["hidden_states"][-1][0]
    torch.testing.assert_close(store.get(keys[1])[:, -1].float(), fresh, rtol=0, atol=2e-3)  # the new audio's states


@pytest.mark.parametrize("action", ["skip", "stop"])
def test_a_nan_rewrite_at_the_same_size_is_found_by_the_audio_checks(tmp_path, action):
    root = tmp_path / "corpus"
    paths = noise_corpus(root / "dev-clean" / "1" / "2", subtype="FLOAT")
    paths = [p.rename(p.with_name(f"1-2-{i:04d}.wav")) for i, p in enumerate(paths)]
    assert len(find_utterances(root, ["dev-clean"], progress=False)) == 4  # indexed: every file usable
    samples = np.random.default_rng(1).normal(0, 0.1, 16000).astype(np.float32)
    samples[::100] = np.nan
    rewrite_keeping_size_and_mtime(paths[2], samples, "FLOAT")
    screen = AudioScreen(action, 400, "runner.on_unreadable")
    if action == "stop":
        with pytest.raises(ValueError, match=f"{paths[2]}: 160 NaN or inf samples"):
            find_utterances(root, ["dev-clean"], progress=False, screen=screen)
    else:
        with pytest.warns(UserWarning, match=f"{paths[2]}: 160 NaN or inf samples"):
            kept = find_utterances(root, ["dev-clean"], progress=False, screen=screen)
        assert [u.path for u in kept] == [p for p in paths if p != paths[2]]


# ---------------------------------------------------------------------------------------------
# Case 2: shards copied in from another store


def test_a_shard_copied_from_another_store_is_dropped_with_a_warning(model, tmp_path):
    paths = noise_corpus(tmp_path / "audio")
    counting = CountingUpstream(model)
    fill_cache(counting, [dataset_of(paths)], DiskStore(tmp_path / "cache" / "aaaa-all", torch.float16), None, torch.float16, 0)
    other = tmp_path / "cache" / "bbbb-all"
    other.mkdir()
    for path in shard_files(tmp_path / "cache" / "aaaa-all"):
        shutil.copy(path, other / path.name)
    with pytest.warns(UserWarning, match="belongs to store aaaa-all, not bbbb-all"):
        store = DiskStore(other, torch.float16)
    assert len(store.index) == 0 and shard_files(other) == []
    fill_cache(counting, [dataset_of(paths)], store, None, torch.float16, 0)
    assert counting.encoded == 2 * len(paths)  # recomputed for this store


# ---------------------------------------------------------------------------------------------
# Case 15: shard indexes written durably; a damaged one is dropped


@pytest.mark.parametrize("damage", ["empty", "partial", "not an index"])
def test_an_empty_or_partial_shard_index_is_dropped_and_recomputed(model, tmp_path, damage):
    paths = noise_corpus(tmp_path / "audio")
    counting = CountingUpstream(model)
    folder = tmp_path / "cache" / "x-all"
    fill_cache(counting, [dataset_of(paths)], DiskStore(folder, torch.float16), None, torch.float16, 0)
    (index,) = folder.glob("shard-*.json")
    text = index.read_text()
    index.write_text({"empty": "", "partial": text[: len(text) // 2], "not an index": '{"bytes": 1}'}[damage])
    with pytest.warns(UserWarning, match=f"{index.with_suffix('.npy').name} is dropped"):
        store = DiskStore(folder, torch.float16)
    assert shard_files(folder) == []
    fill_cache(counting, [dataset_of(paths)], store, None, torch.float16, 0)
    assert counting.encoded == 2 * len(paths)


def test_shard_files_and_their_folder_are_fsynced_before_they_count(model, tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real_fsync(fd)))
    folder = tmp_path / "cache" / "x-all"
    fill_cache(CountingUpstream(model), [dataset_of(noise_corpus(tmp_path / "audio"))], DiskStore(folder, torch.float16),
               None, torch.float16, 0)
    for path in [*folder.glob("shard-*.json"), *folder.glob("shard-*.npy"), folder]:
        assert path.stat().st_ino in synced, path


# ---------------------------------------------------------------------------------------------
# Case 14: a full disk


def test_a_full_disk_names_the_folder_and_the_space_and_leaves_no_temporary_file(model, tmp_path, monkeypatch):
    def full_disk(stream, array):
        stream.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feature_store.np, "save", full_disk)
    folder = tmp_path / "cache" / "x-all"
    paths = noise_corpus(tmp_path / "audio")
    with pytest.raises(ValueError) as raised:
        fill_cache(CountingUpstream(model), [dataset_of(paths)], DiskStore(folder, torch.float16), None, torch.float16, 0)
    message = str(raised.value)
    assert message.startswith(f"no space left on the device for the feature cache in {folder}: it needs about ")
    # 4 s of audio, 3 states x 32 wide in float16: (4 x 33 frames) x 3 x 32 x 2 bytes = 24.8 KB
    assert "needs about 24.8 KB more" in message and "0.0 GB" not in message
    assert list(folder.iterdir()) == []


def test_a_short_write_of_numpy_on_a_full_disk_gives_the_space_message(model, tmp_path, monkeypatch):
    def full_disk(stream, array):
        stream.write(b"\0" * 1000)
        raise OSError(f"{array.nbytes} requested and 1000 written")  # numpy's tofile on a full disk: no errno

    monkeypatch.setattr(feature_store.np, "save", full_disk)
    folder = tmp_path / "cache" / "x-all"
    with pytest.raises(ValueError, match=rf"^no space left on the device for the feature cache in {folder}: it needs about "):
        fill_cache(
            CountingUpstream(model),
            [dataset_of(noise_corpus(tmp_path / "audio"))],
            DiskStore(folder, torch.float16),
            None,
            torch.float16,
            0,
        )
    assert list(folder.iterdir()) == []


def test_temporary_files_of_dead_writers_are_swept_and_a_live_writers_kept(tmp_path):
    folder = tmp_path / "x-all"
    folder.mkdir()
    dead = folder / ".shard-0-123-00000-abcdef01.npy.tmp"
    dead.write_bytes(b"\0" * 7000)
    live = folder / ".shard-0-456-00000-abcdef02.npy.tmp"
    live.write_bytes(b"\0" * 10)
    with open(live, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # as write_atomic holds it while writing
        DiskStore(folder, torch.float16)
        assert not dead.exists() and live.exists()
    DiskStore(folder, torch.float16)
    assert not live.exists()


def test_the_disk_plan_counts_what_is_stored_and_gives_a_readable_size(tmp_path):
    folder = tmp_path / "x-all"
    with pytest.raises(ValueError, match=rf"needs about 7\.0 MB more in {folder} but its disk has 3\.0 MB free"):
        plan_cache("disk", False, 7 << 20, 0, folder, False, free_bytes=3 << 20)
    # A rerun once the store is complete needs nothing more, however little is free.
    assert plan_cache("disk", False, 7 << 20, 0, folder, False, free_bytes=0, stored=7 << 20).mode == "disk"
    assert plan_cache("auto", False, 7 << 20, 0, folder, False, free_bytes=8 << 20, stored=1 << 20).mode == "disk"


# ---------------------------------------------------------------------------------------------
# Case 16: one long file


def test_a_long_input_is_encoded_a_few_chunks_at_a_time_with_the_same_states(monkeypatch):
    torch.manual_seed(0)
    model = Upstream(tiny_config(max_frames=50)).eval()
    wav = 0.1 * torch.randn(16000 * 60)  # 2000 stacked frames: 40 chunks
    calls = []
    encode = model.encoder._encode
    monkeypatch.setattr(
        model.encoder, "_encode", lambda x, lengths: (calls.append(x.shape[0] * x.shape[1]), encode(x, lengths))[1]
    )
    with torch.inference_mode():
        grouped = model([wav])
        monkeypatch.setattr(encoder_module, "CHUNK_FRAMES_PER_PASS", 10**9)
        calls_grouped, calls[:] = list(calls), []
        whole = model([wav])
    assert len(calls_grouped) > 1 and max(calls_grouped) <= encoder_module.CHUNK_FRAMES_PER_PASS
    assert calls == [2000]  # one call for every chunk: what a 30-minute file did
    for a, b in zip(grouped["hidden_states"], whole["hidden_states"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_running_out_of_memory_names_the_files_being_encoded(model, tmp_path):
    paths = noise_corpus(tmp_path / "audio", count=2)

    def out_of_memory():
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 GB"
        )

    with pytest.raises(ValueError, match=rf"out of memory extracting the features of {paths[0]}, {paths[1]} \(the longest 1 s\)"):
        fill_cache(CountingUpstream(model, out_of_memory), [dataset_of(paths)], MemoryStore(), None, torch.float16, 0)


# ---------------------------------------------------------------------------------------------
# Case 18: Ctrl-C during the first pass


@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_ctrl_c_during_the_first_pass_stops_after_the_batch_and_keeps_it(model, tmp_path, monkeypatch, kind):
    monkeypatch.setattr(feature_cache, "PASS_SAMPLES", 2 * 16000)  # batches of 2 one-second files
    paths = noise_corpus(tmp_path / "audio", count=6)
    folder = tmp_path / "cache" / "x-all"
    counting = CountingUpstream(model, lambda: os.kill(os.getpid(), signal.SIGINT))
    store = DiskStore(folder, torch.float16) if kind == "disk" else MemoryStore(folder, torch.float16)
    with stop_at_step_boundary(), pytest.raises(TrainingInterrupted) as raised:
        fill_cache(counting, [dataset_of(paths)], store, None, torch.float16, 0)
    assert counting.encoded == 2  # stopped after the first batch
    assert str(raised.value).startswith(f"interrupted during feature extraction: 2 of 6 utterance(s) extracted, kept in {folder}")
    assert "continue with: the same command" in str(raised.value)
    counting.after_batch = None
    rerun = DiskStore(folder, torch.float16) if kind == "disk" else MemoryStore(folder, torch.float16)
    assert len(rerun.disk.index if kind == "memory" else rerun.index) == 2
    fill_cache(counting, [dataset_of(paths)], rerun, None, torch.float16, 0)
    assert counting.encoded == 6  # the rerun extracted only the other 4


def test_ctrl_c_during_extraction_of_a_probing_run_exits_130_and_the_rerun_continues(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(feature_cache, "PASS_SAMPLES", 4 * 16000)
    encode = feature_cache._encode
    calls = []

    def interrupted_once(upstream, wavs, names):
        calls.append(len(wavs))
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return encode(upstream, wavs, names)

    monkeypatch.setattr(feature_cache, "_encode", interrupted_once)
    command = ["-u", "fbank", "-d", "speaker_utterance", "-p", str(tmp_path / "run"), "-o", "runner.total_steps=2",
               "runner.eval_step=2", "runner.feature_cache=memory"]
    with warnings.catch_warnings(), pytest.raises(SystemExit) as exited:
        warnings.simplefilter("ignore", UserWarning)
        run_cli(run_downstream.main, command)
    assert exited.value.code == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted during feature extraction: {calls[0]} of ")
    assert f"kept in {tmp_path / 'run' / 'feature_cache'}" in last
    total = int(last.split(" of ")[1].split()[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run_downstream.main(command)
    assert sum(calls) == total  # nothing extracted twice
    assert (tmp_path / "run" / "results.json").is_file()


# ---------------------------------------------------------------------------------------------
# Case 17: the memory budget


@pytest.mark.parametrize("value", [".inf", "inf", ".nan", "nan", "-1"])
def test_a_memory_budget_that_is_not_a_finite_number_of_gb_is_one_line_naming_the_key(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exited:
        run_cli(run_downstream.main, ["-u", "fbank", "-d", "speaker_utterance", "-p", str(tmp_path / "run"),
                                      "-o", f"runner.feature_cache_memory_gb={value}"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: runner.feature_cache_memory_gb must be a finite number")
    assert not (tmp_path / "run").exists()  # refused before anything is written
