"""Extract once, probe many: each utterance's hidden states computed once and served from a store.

A probe on a frozen upstream sees every training utterance many times (a 3000-update probe on
an hour of audio: about 50 times), so without a cache nearly all of its time is the same
upstream pass repeated, and even plain filterbanks are decoded and computed again at each step.

What is stored: the hidden states the probe reads (all of them for a weighted sum, one for
``-l N``), per utterance as (frames, states, hidden), in ``runner.feature_cache_dtype``
(float16 by default: half the memory of float32; probe metrics within noise of float32 storage,
see downstream/README.md).

Where (``downstream/feature_store.py``): in memory, or on disk as memory-mapped shards in a
folder named by the fingerprint of everything that changes the features: upstream name and
configuration, the checkpoint file's content hash, precision, the stored states and the
storage dtype. Each utterance inside is keyed by its audio file's path and version (size,
modification time, change time and inode: ``utility.integrity.file_version``; for sources
that are not files, a hash of the samples), so a changed file is computed afresh, even one
rewritten at the same size with its modification time put back, and one folder serves every
task, layer sweep, proportion and rerun on the same corpus.

The first pass decodes audio in DataLoader workers while the model runs, groups utterances of
similar length to limit padding, shows a progress bar with the estimated time, and never
touches the global random generators (resumed runs stay exact). Ctrl-C (see
``utility.interrupt``) stops it after the current batch, keeping the utterances done on disk
(a memory cache writes them to its folder), for the same command to continue from. Under
torchrun each process computes its share into the disk store and reads the others' shards.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import soundfile
import torch
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from corpora.label_frames import resampled_length
from upstream import Upstream
from upstream.audio import check_waveforms
from utility.cli import DISK_FULL, is_out_of_memory
from utility.integrity import file_sha256, file_version, tensor_checksum
from utility.interrupt import TrainingInterrupted, ignore_interrupts_in_worker, stop_requested
from utility.process_group import DistributedContext
from utility.typed_config import check_choice

from .base import Batch, Example, ProbeDataset
from .feature_store import DiskStore, MemoryStore, stored_bytes, sweep_temporaries

MODES = ("auto", "memory", "disk", "off")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
PASS_SAMPLES = 8 * 10 * 16000  # audio per first-pass batch (8 x 10 s): bounded memory, little padding
# Bumped when the meaning of what a store holds changes, so that older stores are not opened:
# 2 keys files by their change time and inode too, and its shards name their store.
LAYOUT = 2


def check_settings(mode: str, dtype: str, memory_gb: float) -> None:
    """Refuse feature-cache settings the cache cannot use, naming the ``runner.`` key."""
    check_choice("runner.feature_cache", mode, MODES)
    check_choice("runner.feature_cache_dtype", dtype, sorted(DTYPES))
    if isinstance(memory_gb, bool) or not isinstance(memory_gb, (int, float)) or not math.isfinite(memory_gb) or memory_gb < 0:
        raise ValueError(f"runner.feature_cache_memory_gb must be a finite number of GB >= 0, got {memory_gb!r}")


@dataclass(frozen=True)
class FeatureCacheConfig:
    """The feature cache's settings, checked when built. The runner builds it once from its
    ``runner.feature_cache*`` keys and ``num_workers`` (``RunnerConfig.feature_cache_config``,
    where the defaults live)."""

    mode: str  # auto, memory, disk or off
    folder: Path  # where disk stores live
    dtype: str  # storage dtype: a key of DTYPES
    memory_gb: float  # auto: the most a memory cache may hold
    num_workers: int  # DataLoader processes decoding audio in the first pass

    def __post_init__(self) -> None:
        check_settings(self.mode, self.dtype, self.memory_gb)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def memory_budget_bytes(self) -> int:
        return int(self.memory_gb * 2**30)


def describe_size(size: float) -> str:
    """Bytes for people, in units of 1024 as ``df -h`` counts: '512 B', '7.1 MB', '1.25 GB'."""
    for unit, scale, digits in (("GB", 2**30, 2), ("MB", 2**20, 1), ("KB", 2**10, 1)):
        if size >= scale:
            return f"{size / scale:.{digits}f} {unit}"
    return f"{int(size)} B"


# ---------------------------------------------------------------------------------------------
# Keys


def is_file_source(source: Any) -> bool:
    return isinstance(source, (str, Path)) and Path(source).is_file()


def item_key(dataset: ProbeDataset, index: int) -> str:
    """What identifies source ``index`` of a dataset: path and version of its file, or a digest
    of the samples for sources that are not plain files."""
    source = dataset.sources[index]
    if is_file_source(source):
        path = Path(source).resolve()
        return "|".join([str(path), *map(str, file_version(path))])
    wav = dataset.load_wav(source).contiguous()
    return "samples:" + hashlib.sha1(wav.numpy().tobytes()).hexdigest()


def item_name(dataset: ProbeDataset, index: int) -> str:
    """How messages name source ``index``: its file, else its utterance id."""
    source = dataset.sources[index]
    return str(source) if is_file_source(source) else dataset.utt_ids[index]


def item_samples(dataset: ProbeDataset, index: int, sample_rate: int) -> int:
    """Waveform length at ``sample_rate`` (file headers only; other sources are loaded)."""
    source = dataset.sources[index]
    if is_file_source(source):
        info = soundfile.info(str(source))
        return resampled_length(info.frames, info.samplerate, sample_rate)
    return int(dataset.load_wav(source).numel())


def state_bytes(upstream: Upstream, samples: Sequence[int], states: Optional[int], dtype: torch.dtype) -> int:
    """What the states of waveforms of ``samples`` take in a store: frames x stored states x
    width x element size (``states``: None for every hidden state, else the one stored)."""
    if not samples:
        return 0
    frames = int(upstream.num_frames(torch.tensor(list(samples))).sum())
    stored = upstream.num_hidden_states if states is None else 1
    return frames * stored * max(upstream.hidden_sizes) * torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True)
class CacheSpec:
    """What the stored features depend on, besides each utterance's audio."""

    upstream: dict[str, Any]  # name, configuration and checkpoint digest of the upstream
    states: Optional[int]  # None: every hidden state; else the one index stored
    dtype: str

    def fingerprint(self) -> str:
        text = json.dumps(
            {"layout": LAYOUT, "upstream": self.upstream, "states": self.states, "dtype": self.dtype}, sort_keys=True, default=str
        )
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
    """Run ``upstream`` once over ``items`` (dataset, index, key) and add their states to ``store``.

    Ctrl-C stops it after the current batch: the utterances done are kept (``store.keep``) and
    :class:`TrainingInterrupted` says so. A full disk and running out of memory raise
    ValueError naming the cache folder and the space it needs, or the files being encoded."""
    if not items:
        return
    batches = length_grouped_batches(lengths, PASS_SAMPLES)
    # Workers read files while the model runs; sources that are not files are made in-process.
    workers = num_workers if num_workers > 0 else (1 if all(is_file_source(d.sources[i]) for d, i, _ in items) else 0)
    loader = torch.utils.data.DataLoader(
        _Waveforms(items),
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_as_list,
        worker_init_fn=ignore_interrupts_in_worker if workers else None,  # the main process stops them
    )
    progress = tqdm(
        total=round(sum(lengths) / upstream.sample_rate),
        unit="s",
        desc="extracting features (audio seconds)",
        disable=not show_progress,
        dynamic_ncols=True,
    )
    done = 0
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            for number, (batch, pairs) in enumerate(zip(batches, loader)):
                names = [item_name(*items[i][:2]) for i in batch]
                output = _encode(upstream, [wav for _, wav in pairs], names)
                hidden = output["hidden_states"] if states is None else [output["hidden_states"][states]]
                # Each utterance's (frames, states, hidden), converted state by state: one copy at
                # the storage dtype, never the whole batch's float32 states stacked again.
                tensors = [
                    torch.stack([state[row, :n].to(dtype) for state in hidden], dim=1).cpu()
                    for row, n in enumerate(output["lengths"].tolist())
                ]
                done += len(batch)  # before add: a shard that fails to write still holds this batch
                store.add([key for key, _ in pairs], tensors)
                progress.update(round(sum(wav.numel() for _, wav in pairs) / upstream.sample_rate))
                if number + 1 < len(batches) and stop_requested():
                    raise TrainingInterrupted(
                        f"interrupted during feature extraction: {done} of {len(items)} utterance(s) extracted, kept "
                        f"{_keep(store)}; continue with: the same command (it extracts only the others)"
                    )
            store.flush()
    except OSError as error:
        if error.errno not in DISK_FULL or not isinstance(store, DiskStore):
            raise
        left = [lengths[i] for batch in batches for i in batch][done:]
        needed = store.pending_bytes + state_bytes(upstream, left, states, dtype)
        raise ValueError(
            f"no space left on the device for the feature cache in {store.folder}: it needs about "
            f"{describe_size(needed)} more ({describe_size(shutil.disk_usage(store.folder).free)} free); free some space "
            "and run the same command again (the stored utterances are kept), point runner.feature_cache_dir "
            "at a disk with room, or use runner.feature_cache=off"
        ) from error
    finally:
        progress.close()


def _encode(upstream: Upstream, wavs: list[torch.Tensor], names: list[str]) -> dict[str, Any]:
    """``upstream(wavs)``; unusable audio and running out of memory raise naming the files."""
    check_waveforms(wavs, upstream.min_samples, names)
    try:
        return upstream([wav.to(upstream.device) for wav in wavs])
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
        seconds = max(wav.numel() for wav in wavs) / upstream.sample_rate
        raise ValueError(
            f"out of memory extracting the features of {', '.join(names)} (the longest {seconds:.0f} s); split "
            "recordings this long into shorter files, or run on a machine with more memory"
        ) from error


def _keep(store: MemoryStore | DiskStore) -> str:
    """Where the utterances extracted so far are, after writing what needs writing."""
    try:
        return store.keep()
    except OSError as error:
        return f"nowhere: writing them failed ({error})"


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
    requested: str,
    fine_tune: bool,
    estimate_bytes: int,
    memory_budget_bytes: int,
    store_folder: Path,
    distributed: bool,
    free_bytes: int,
    stored: int = 0,
) -> CachePlan:
    """``auto``: memory when the estimate fits the budget, else disk when the disk has room for
    what the store lacks (``estimate_bytes`` less the ``stored`` bytes already in
    ``store_folder``, with 10 % to spare; ``free_bytes`` free there), else off. Fine-tuning is
    always off (the states change). Under torchrun memory is filled through disk shards, so
    each process computes only its share."""
    if fine_tune or requested == "off":
        return CachePlan("off", estimate_bytes, "fine-tuning" if fine_tune and requested != "off" else "runner.feature_cache=off")
    needed = max(estimate_bytes - stored, 0)
    fits_disk = needed * 1.1 <= free_bytes
    if requested == "auto":
        if estimate_bytes <= memory_budget_bytes and not distributed:
            return CachePlan("memory", estimate_bytes, "fits the memory budget")
        if fits_disk:
            return CachePlan("disk", estimate_bytes, "larger than the memory budget" if not distributed else "torchrun")
        return CachePlan(
            "off", estimate_bytes, f"neither the memory budget nor the {describe_size(free_bytes)} free on disk hold it"
        )
    if requested == "disk" and not fits_disk:
        raise ValueError(
            f"runner.feature_cache=disk: the cache needs about {describe_size(needed)} more in {store_folder} but its disk "
            f"has {describe_size(free_bytes)} free; free some space, point runner.feature_cache_dir elsewhere or use "
            "runner.feature_cache=off"
        )
    return CachePlan(requested, estimate_bytes, "asked for")


def _existing_parent(path: Path) -> Path:
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return path


def open_store(plan: CachePlan, folder: Path, dtype: torch.dtype, context: DistributedContext) -> MemoryStore | DiskStore:
    if plan.mode == "memory" and not context.is_distributed:
        return MemoryStore(folder, dtype)  # reads what an interrupted run kept in the folder
    return DiskStore(folder, dtype, writer=str(context.rank))


def fill_cache(
    upstream: Upstream,
    datasets: Sequence[ProbeDataset],
    store: MemoryStore | DiskStore,
    states: Optional[int],
    dtype: torch.dtype,
    num_workers: int,
    context: Optional[DistributedContext] = None,
) -> list[list[str]]:
    """Extract what ``store`` lacks (each process its share), then return every dataset's keys."""
    context = context or DistributedContext()
    keys = [[item_key(dataset, index) for index in range(len(dataset.sources))] for dataset in datasets]
    missing: dict[str, tuple[ProbeDataset, int, str]] = {}
    for dataset, dataset_keys in zip(datasets, keys):
        for index, key in enumerate(dataset_keys):
            if key not in store and key not in missing:
                missing[key] = (dataset, index, key)
    share = list(missing.values())[context.rank :: context.world_size]
    lengths = [item_samples(dataset, index, upstream.sample_rate) for dataset, index, _ in share]
    extract(upstream, share, lengths, store, states, dtype, num_workers, show_progress=context.is_main)
    context.barrier()
    if isinstance(store, DiskStore):
        store.reload()  # the other processes' shards
    return keys


def serve_from_cache(
    upstream: Upstream,
    identity: dict[str, Any],
    datasets: dict[str, ProbeDataset],
    config: FeatureCacheConfig,
    layer: Optional[int],
    fine_tune: bool,
    context: DistributedContext,
    log: Callable[[str], None] = print,
) -> dict[str, ProbeDataset]:
    """``datasets`` served from the feature cache ``config`` describes, or unchanged when it is
    off. Prints the size estimate and the decision before the first pass.

    A weighted sum stores every hidden state; ``-l N`` stores state N alone, unless a store of
    every state for the same upstream already exists in the folder (a layer sweep extracts once).
    """
    states = None if layer is None else layer % upstream.num_hidden_states
    if states is not None and (config.folder / CacheSpec(identity, None, config.dtype).folder_name).is_dir():
        states = None
    unique = {}
    for dataset in datasets.values():
        for index in range(len(dataset.sources)):
            unique.setdefault((id(dataset), index), dataset)
    samples = [item_samples(dataset, index, upstream.sample_rate) for (_, index), dataset in unique.items()]
    estimate = state_bytes(upstream, samples, states, config.torch_dtype)
    spec = CacheSpec(identity, states, config.dtype)
    store_folder = config.folder / spec.folder_name
    if store_folder.is_dir():
        sweep_temporaries(store_folder)  # a dead run's leftovers must not count against the free space
    plan = plan_cache(
        config.mode,
        fine_tune,
        estimate,
        config.memory_budget_bytes,
        store_folder,
        context.is_distributed,
        shutil.disk_usage(_existing_parent(store_folder)).free,
        stored_bytes(store_folder),
    )
    frames = int(upstream.num_frames(torch.tensor(samples)).sum()) if samples else 0
    stored = upstream.num_hidden_states if states is None else 1
    log(
        f"feature cache: {len(samples)} utterances, {frames} frames x {stored} hidden state(s) x {max(upstream.hidden_sizes)} x "
        f"{torch.empty((), dtype=config.torch_dtype).element_size()} bytes = {describe_size(estimate)} "
        f"-> {plan.mode} ({plan.reason})"
    )
    if plan.mode == "off":
        return dict(datasets)
    store = open_store(plan, store_folder, config.torch_dtype, context)
    names = list(datasets)
    keys = fill_cache(upstream, [datasets[n] for n in names], store, states, config.torch_dtype, config.num_workers, context)
    return {name: cached_view(datasets[name], dataset_keys, store) for name, dataset_keys in zip(names, keys)}
