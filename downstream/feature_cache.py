"""Extract once, probe many: each utterance's hidden states computed once and served from a store.

A probe on a frozen upstream sees every training utterance many times (a 3000-update probe on
an hour of audio: about 50 times), so without a cache nearly all of its time is the same
upstream pass repeated, and even plain filterbanks are decoded and computed again at each step.

What is stored: the hidden states the probe reads (all of them for a weighted sum, one for
``-l N``), per utterance as (frames, states, hidden), in ``runner.feature_cache_dtype``
(float16 by default: half the memory of float32; probe metrics within noise of float32 storage,
see downstream/README.md).

Where: in memory, or on disk as memory-mapped shards (``shard-*.npy`` + ``shard-*.json``) in a
folder named by the fingerprint of everything that changes the features: upstream name and
configuration, the checkpoint file's content hash, precision, the stored states and the
storage dtype. Each utterance inside is keyed by its audio file's path, size and modification
time (or, for sources that are not files, a hash of the samples), so a changed file is
computed afresh and one folder serves every task, layer sweep, proportion and rerun on the
same corpus. A shard's data is written to a temporary name and its index (with the data's
size and SHA-256) renamed into place last, so a killed run leaves nothing a later run trusts; a
shard whose data does not match its index is dropped with a warning and recomputed.

The first pass decodes audio in DataLoader workers while the model runs, groups utterances of
similar length to limit padding, shows a progress bar with the estimated time, and never
touches the global random generators (resumed runs stay exact). Under torchrun each process
computes its share into the disk store and reads the others' shards.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import soundfile
import torch
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from corpora.label_frames import resampled_length
from upstream import Upstream
from utility.integrity import file_sha256, tensor_checksum

from .base import Batch, Example, ProbeDataset

MODES = ("auto", "memory", "disk", "off")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# numpy has no bfloat16: such shards hold the raw 16-bit patterns.
_NUMPY_STORAGE = {torch.float16: np.float16, torch.bfloat16: np.int16, torch.float32: np.float32}
SHARD_BYTES = 256 << 20  # a shard is written once this much is extracted
PASS_SAMPLES = 8 * 10 * 16000  # audio per first-pass batch (8 x 10 s): bounded memory, little padding


# ---------------------------------------------------------------------------------------------
# Keys


def is_file_source(source: Any) -> bool:
    return isinstance(source, (str, Path)) and Path(source).is_file()


def item_key(dataset: ProbeDataset, index: int) -> str:
    """What identifies source ``index`` of a dataset: path, size and modification time of its
    file, or a digest of the samples for sources that are not plain files."""
    source = dataset.sources[index]
    if is_file_source(source):
        path = Path(source).resolve()
        stat = path.stat()
        return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    wav = dataset.load_wav(source).contiguous()
    return "samples:" + hashlib.sha1(wav.numpy().tobytes()).hexdigest()


def item_samples(dataset: ProbeDataset, index: int, sample_rate: int) -> int:
    """Waveform length at ``sample_rate`` (file headers only; other sources are loaded)."""
    source = dataset.sources[index]
    if is_file_source(source):
        info = soundfile.info(str(source))
        return resampled_length(info.frames, info.samplerate, sample_rate)
    return int(dataset.load_wav(source).numel())


@dataclass(frozen=True)
class CacheSpec:
    """What the stored features depend on, besides each utterance's audio."""

    upstream: dict[str, Any]  # name, configuration and checkpoint digest of the upstream
    states: Optional[int]  # None: every hidden state; else the one index stored
    dtype: str

    def fingerprint(self) -> str:
        text = json.dumps({"upstream": self.upstream, "states": self.states, "dtype": self.dtype}, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    @property
    def folder_name(self) -> str:
        return f"{self.fingerprint()}-{'all' if self.states is None else f'state{self.states}'}"


def upstream_identity(upstream: Upstream, name: Optional[str], ckpt: Optional[str]) -> dict[str, Any]:
    """Everything about an upstream that changes its hidden states."""
    encoder = upstream.encoder
    return {
        "name": name,
        "config": upstream.config.to_dict() if hasattr(upstream, "config") else None,
        "checkpoint_sha256": file_sha256(ckpt) if ckpt else None,
        # Random weights (no checkpoint) are part of the identity too: a checksum of them.
        "weights_checksum": None if ckpt or encoder is None else tensor_checksum(encoder.state_dict()),
        "precision": str(next(encoder.parameters()).dtype) if encoder is not None else "float32",
    }


# ---------------------------------------------------------------------------------------------
# Stores


class MemoryStore:
    """Utterance key -> (frames, states, hidden) tensor, in this process's memory."""

    def __init__(self) -> None:
        self.items: dict[str, torch.Tensor] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.items

    def get(self, key: str) -> torch.Tensor:
        return self.items[key]

    def add(self, keys: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
        self.items.update(zip(keys, tensors))

    def flush(self) -> None:
        pass


class DiskStore:
    """Memory-mapped shards in ``folder``; see the module docstring for the layout."""

    def __init__(self, folder: Path, dtype: torch.dtype, writer: str = "0"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self.writer = writer  # in shard names, so processes never write the same file
        self.index: dict[str, tuple[str, int, int]] = {}  # key -> (shard, first row, frames)
        self.arrays: dict[str, np.ndarray] = {}
        self.pending_keys: list[str] = []
        self.pending: list[torch.Tensor] = []
        self.reload()

    def reload(self) -> None:
        """Read every complete shard's index; drop (and warn about) damaged shards."""
        for meta_path in sorted(self.folder.glob("shard-*.json")):
            shard = meta_path.stem
            if shard in self.arrays:
                continue
            data_path = meta_path.with_suffix(".npy")
            meta = json.loads(meta_path.read_text())
            problem = self._check(data_path, meta)
            if problem:
                warnings.warn(f"feature cache shard {data_path} is damaged ({problem}); it is recomputed", stacklevel=2)
                meta_path.unlink(missing_ok=True)
                data_path.unlink(missing_ok=True)
                continue
            self.arrays[shard] = np.load(data_path, mmap_mode="r")
            for key, start, frames in zip(meta["keys"], meta["starts"], meta["frames"]):
                self.index[key] = (shard, start, frames)

    @staticmethod
    def _check(data_path: Path, meta: dict[str, Any]) -> Optional[str]:
        if not data_path.is_file():
            return "data file missing"
        if data_path.stat().st_size != meta["bytes"]:
            return f"{data_path.stat().st_size} bytes, the index says {meta['bytes']}"
        if file_sha256(data_path) != meta["sha256"]:
            return "checksum mismatch"
        return None

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def get(self, key: str) -> torch.Tensor:
        shard, start, frames = self.index[key]
        rows = np.array(self.arrays[shard][start : start + frames])  # a copy: the map stays read-only
        return torch.from_numpy(rows).view(self.dtype)

    def add(self, keys: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
        self.pending_keys.extend(keys)
        self.pending.extend(tensors)
        if sum(t.numel() * t.element_size() for t in self.pending) >= SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the pending utterances as one shard: data first, then its index (the commit)."""
        if not self.pending:
            return
        frames = [int(t.shape[0]) for t in self.pending]
        starts = np.concatenate([[0], np.cumsum(frames)[:-1]]).tolist()
        data = torch.cat(self.pending).contiguous().view(torch.int16 if self.dtype == torch.bfloat16 else self.dtype).numpy()
        shard = f"shard-{self.writer}-{os.getpid()}-{len(self.arrays):05d}-{hashlib.sha1(''.join(self.pending_keys).encode()).hexdigest()[:8]}"
        data_path = self.folder / f"{shard}.npy"
        temp = self.folder / f".{shard}.npy.tmp"
        with open(temp, "wb") as handle:
            np.save(handle, data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, data_path)
        meta = {"keys": self.pending_keys, "starts": starts, "frames": frames, "bytes": data_path.stat().st_size, "sha256": file_sha256(data_path)}
        temp_meta = self.folder / f".{shard}.json.tmp"
        temp_meta.write_text(json.dumps(meta))
        os.replace(temp_meta, self.folder / f"{shard}.json")
        self.pending_keys, self.pending = [], []
        self.reload()


# ---------------------------------------------------------------------------------------------
# The first pass


class _Waveforms(torch.utils.data.Dataset):
    """(key, waveform) of the utterances still to extract; decoded in DataLoader workers."""

    def __init__(self, items: Sequence[tuple[ProbeDataset, int, str]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor]:
        dataset, position, key = self.items[index]
        return key, dataset.load_wav(dataset.sources[position])


def _as_list(pairs: list) -> list:
    return pairs


def length_grouped_batches(lengths: Sequence[int], max_samples: int = PASS_SAMPLES) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most ``max_samples`` padded samples."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * lengths[index] <= max_samples:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def extract(
    upstream: Upstream,
    items: Sequence[tuple[ProbeDataset, int, str]],
    lengths: Sequence[int],
    store: MemoryStore | DiskStore,
    states: Optional[int],
    dtype: torch.dtype,
    num_workers: int,
    show_progress: bool = True,
) -> None:
    """Run ``upstream`` once over ``items`` (dataset, index, key) and add their states to ``store``."""
    if not items:
        return
    batches = length_grouped_batches(lengths)
    # Workers read files while the model runs; sources that are not files are made in-process.
    workers = num_workers if num_workers > 0 else (1 if all(is_file_source(d.sources[i]) for d, i, _ in items) else 0)
    loader = torch.utils.data.DataLoader(_Waveforms(items), batch_sampler=batches, num_workers=workers, collate_fn=_as_list)
    seconds = sum(lengths) / upstream.sample_rate
    progress = tqdm(total=round(seconds), unit="s", desc="extracting features (audio seconds)", disable=not show_progress, dynamic_ncols=True)
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        for pairs in loader:
            keys = [key for key, _ in pairs]
            output = upstream([wav.to(upstream.device) for _, wav in pairs])
            hidden = output["hidden_states"] if states is None else [output["hidden_states"][states]]
            stacked = torch.stack(list(hidden), dim=2)  # (B, S, states, H)
            store.add(keys, [stacked[row, : int(length)].to(dtype).cpu().clone() for row, length in enumerate(output["lengths"])])
            progress.update(round(sum(wav.numel() for _, wav in pairs) / upstream.sample_rate))
    store.flush()
    progress.close()


# ---------------------------------------------------------------------------------------------
# Serving cached states to the runner


def collate_states(examples: Sequence[Example]) -> Batch:
    """Examples whose ``wav`` holds stored states -> a batch with ``states`` (and no waveforms)."""
    return Batch([e.utt_id for e in examples], [], [e.target for e in examples], states=[e.wav for e in examples])


def cached_view(dataset: ProbeDataset, keys: Sequence[str], store: MemoryStore | DiskStore) -> ProbeDataset:
    """``dataset`` (any subclass, with its own indexing and targets) reading each item's stored
    (frames, states, hidden) instead of decoding its audio."""
    view = copy.copy(dataset)
    view.sources = list(keys)  # one key per source, in order
    view.load_wav = store.get  # the instance's own loader: the subclass's indexing stays as it is
    view.collate = collate_states
    return view


def padded_states(states: Sequence[torch.Tensor], device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-utterance (frames, S, H) -> S tensors of (B, T, H) in float32, zero past (B,) lengths."""
    lengths = torch.tensor([s.shape[0] for s in states], device=device)
    padded = pad_sequence([s.to(device=device, dtype=torch.float32) for s in states], batch_first=True)  # (B, T, S, H)
    return list(padded.unbind(dim=2)), lengths


@dataclass
class CachePlan:
    """How a run caches, decided before the first pass (see :func:`plan_cache`)."""

    mode: str  # memory, disk or off
    estimate_bytes: int
    reason: str


def plan_cache(
    requested: str, fine_tune: bool, estimate_bytes: int, memory_budget_bytes: int, disk_folder: Path, distributed: bool
) -> CachePlan:
    """``auto``: memory when the estimate fits the budget, else disk when the disk has room
    (with 10 % to spare), else off. Fine-tuning is always off (the states change). Under
    torchrun memory is filled through disk shards, so each process computes only its share."""
    if fine_tune or requested == "off":
        return CachePlan("off", estimate_bytes, "fine-tuning" if fine_tune and requested != "off" else "runner.feature_cache=off")
    free = shutil.disk_usage(_existing_parent(disk_folder)).free
    fits_disk = estimate_bytes * 1.1 < free
    if requested == "auto":
        if estimate_bytes <= memory_budget_bytes and not distributed:
            return CachePlan("memory", estimate_bytes, "fits the memory budget")
        if fits_disk:
            return CachePlan("disk", estimate_bytes, "larger than the memory budget" if not distributed else "torchrun")
        return CachePlan("off", estimate_bytes, f"neither the memory budget nor the {free / 2**30:.1f} GB free on disk hold it")
    if requested == "disk" and not fits_disk:
        raise ValueError(
            f"runner.feature_cache=disk: the cache needs about {estimate_bytes / 2**30:.1f} GB but {disk_folder} has "
            f"{free / 2**30:.1f} GB free; point runner.feature_cache_dir elsewhere or use runner.feature_cache=off"
        )
    return CachePlan(requested, estimate_bytes, "asked for")


def _existing_parent(path: Path) -> Path:
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return path


def open_store(plan: CachePlan, folder: Path, dtype: torch.dtype, rank: int, distributed: bool) -> MemoryStore | DiskStore:
    if plan.mode == "memory" and not distributed:
        return MemoryStore()
    return DiskStore(folder, dtype, writer=str(rank))


def fill_cache(
    upstream: Upstream,
    datasets: Sequence[ProbeDataset],
    store: MemoryStore | DiskStore,
    states: Optional[int],
    dtype: torch.dtype,
    num_workers: int,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
) -> list[list[str]]:
    """Extract what ``store`` lacks (each process its share), then return every dataset's keys."""
    keys = [[item_key(dataset, index) for index in range(len(dataset.sources))] for dataset in datasets]
    missing: dict[str, tuple[ProbeDataset, int, str]] = {}
    for dataset, dataset_keys in zip(datasets, keys):
        for index, key in enumerate(dataset_keys):
            if key not in store and key not in missing:
                missing[key] = (dataset, index, key)
    share = list(missing.values())[rank::world_size]
    lengths = [item_samples(dataset, index, upstream.sample_rate) for dataset, index, _ in share]
    extract(upstream, share, lengths, store, states, dtype, num_workers, show_progress=rank == 0)
    barrier()
    if isinstance(store, DiskStore):
        store.reload()  # the other processes' shards
    return keys


def serve_from_cache(
    upstream: Upstream,
    identity: dict[str, Any],
    datasets: dict[str, ProbeDataset],
    runner: Any,
    layer: Optional[int],
    fine_tune: bool,
    default_folder: Path,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
    log: Callable[[str], None] = print,
) -> dict[str, ProbeDataset]:
    """``datasets`` served from the feature cache that ``runner`` (the runner config) asks for,
    or unchanged when it is off. Prints the size estimate and the decision before the first pass.

    A weighted sum stores every hidden state; ``-l N`` stores state N alone, unless a store of
    every state for the same upstream already exists in the folder (a layer sweep extracts once).
    """
    distributed = world_size > 1
    folder = Path(runner.feature_cache_dir) if runner.feature_cache_dir else Path(default_folder)
    dtype = DTYPES[runner.feature_cache_dtype]
    states = None if layer is None else layer % upstream.num_hidden_states
    if states is not None and (folder / CacheSpec(identity, None, runner.feature_cache_dtype).folder_name).is_dir():
        states = None
    stored = upstream.num_hidden_states if states is None else 1
    unique = {}
    for dataset in datasets.values():
        for index in range(len(dataset.sources)):
            unique.setdefault((id(dataset), index), dataset)
    samples = [item_samples(dataset, index, upstream.sample_rate) for (_, index), dataset in unique.items()]
    frames = int(upstream.num_frames(torch.tensor(samples)).sum()) if samples else 0
    width = max(upstream.hidden_sizes)
    estimate = frames * stored * width * torch.empty((), dtype=dtype).element_size()
    plan = plan_cache(runner.feature_cache, fine_tune, estimate, int(runner.feature_cache_memory_gb * 2**30), folder, distributed)
    log(
        f"feature cache: {len(samples)} utterances, {frames} frames x {stored} hidden state(s) x {width} x "
        f"{torch.empty((), dtype=dtype).element_size()} bytes = {estimate / 2**30:.2f} GB -> {plan.mode} ({plan.reason})"
    )
    if plan.mode == "off":
        return dict(datasets)
    spec = CacheSpec(identity, states, runner.feature_cache_dtype)
    store = open_store(plan, folder / spec.folder_name, dtype, rank, distributed)
    names = list(datasets)
    keys = fill_cache(upstream, [datasets[n] for n in names], store, states, dtype, runner.num_workers, rank, world_size, barrier)
    return {name: cached_view(datasets[name], dataset_keys, store) for name, dataset_keys in zip(names, keys)}
