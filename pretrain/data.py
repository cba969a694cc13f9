"""Pretraining data: which utterances, grouped into which batches, and the DataLoader items
that turn them into masked feature batches (read, crop, features, masks: all in workers).

Reproducibility: every random choice is drawn from a generator seeded by (seed, update,
position in the update's batch), never from a global or per-worker stream. The batch of update
``u`` and everything done to it is therefore a pure function of the settings and ``u``:
resuming at update ``u`` just starts the sampler there, and splitting a batch across processes
or accumulation steps does not change any crop or mask.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from upstream.audio import read_audio
from upstream.frontend import FeatureExtractor
from corpora.audio_check import AudioScreen
from corpora.index import find_utterances
from corpora.root import DEMO_ROOT
from corpora.utterance import Utterance
from utility.interrupt import ignore_interrupts_in_worker

from .masking import mask_frames
from .settings import PretrainSettings

# Second key of every derived seed: keeps the streams for different purposes apart.
TRAIN_ITEM, EPOCH_ORDER, DEV_ITEM, DROPOUT_STREAM = 0, 1, 2, 3


def derived_seed(*keys: int) -> int:
    """A 63-bit seed mixing all ``keys`` (numpy's SeedSequence: nearby keys give unrelated streams)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded with :func:`derived_seed`."""
    return torch.Generator().manual_seed(derived_seed(*keys))


@dataclass
class MaskedBatch:
    """One micro-batch. inputs / clean_inputs: (B, T, D); lengths: (B,) real frames;
    targets: (B, T, Dt); selected: (B, T // R) bool positions the loss counts."""

    inputs: torch.Tensor
    clean_inputs: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    selected: torch.Tensor
    utt_ids: list[str]
    unreadable: list[str]

    def __len__(self) -> int:
        return len(self.utt_ids)

    def _map(self, fn) -> "MaskedBatch":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return MaskedBatch(**{k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in values.items()})

    def pin_memory(self) -> "MaskedBatch":
        """Called by the DataLoader when ``pin_memory=True`` (GPU runs)."""
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device) -> "MaskedBatch":
        return self._map(lambda t: t.to(device, non_blocking=True))


def corpus_root(settings: PretrainSettings) -> Path:
    return Path(settings.corpus.root) if settings.corpus.root is not None else DEMO_ROOT


def samples_at(utterance: Utterance, sample_rate: int) -> int:
    """Length in samples after resampling to ``sample_rate``."""
    return round(utterance.num_samples * sample_rate / utterance.sample_rate)


def select_utterances(settings: PretrainSettings, subsets: Sequence[str], min_samples: int) -> list[Utterance]:
    """Utterances of ``subsets`` long enough to mask. Unusable audio (unreadable, empty, too
    short for one frame, not mono, NaN/inf samples; see ``corpora.audio_check``) is left out
    with a warning naming each file (``corpus.on_unreadable: skip``) or stops the run (``stop``)."""
    root = corpus_root(settings)
    one_frame = FeatureExtractor(settings.model.frontend).min_samples(settings.downsample_rate)
    screen = AudioScreen(settings.corpus.on_unreadable, one_frame, "corpus.on_unreadable")
    utterances = find_utterances(root, subsets, screen=screen)
    rate = settings.model.frontend.sample_rate
    usable = [u for u in utterances if samples_at(u, rate) >= min_samples]
    too_short = [u for u in utterances if samples_at(u, rate) < min_samples]
    if too_short:
        warnings.warn(
            f"skipped {len(too_short)} of {len(utterances)} utterances in {root} {list(subsets)}: shorter than "
            f"{min_samples / rate:.3f} s, too short to mask (masking.proportion / masking.span): "
            + ", ".join(u.utt_id for u in too_short),
            stacklevel=2,
        )
    if not usable:
        raise ValueError(f"no utterance of {root} {list(subsets)} is long enough to mask ({min_samples} samples)")
    return usable


class BatchPlan:
    """Length-bucketed batches of utterance indices, epoch after epoch.

    Each epoch shuffles the utterances (dropping the remainder that does not fill a batch),
    sorts each run of ``bucket_batches`` batches' worth by length, cuts it into batches, and
    shuffles the batch order. Batch ``u`` is a pure function of (seed, u).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, bucket_batches: int, seed: int):
        if len(lengths) < batch_size:
            raise ValueError(
                f"the corpus has {len(lengths)} usable utterances, fewer than data.batch_size={batch_size}; "
                "lower data.batch_size or add subsets"
            )
        self.lengths = torch.as_tensor(lengths)
        self.batch_size = batch_size
        self.bucket_size = bucket_batches * batch_size
        self.seed = seed
        self.batches_per_epoch = len(lengths) // batch_size
        self._epoch: Optional[int] = None
        self._batches: list[list[int]] = []

    def epoch(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            generator = seeded_generator(self.seed, EPOCH_ORDER, epoch)
            order = torch.randperm(len(self.lengths), generator=generator)[: self.batches_per_epoch * self.batch_size]
            batches = []
            for start in range(0, len(order), self.bucket_size):
                bucket = order[start : start + self.bucket_size]
                bucket = bucket[torch.argsort(self.lengths[bucket], stable=True)]
                batches.extend(bucket.split(self.batch_size))
            shuffle = torch.randperm(len(batches), generator=generator)
            self._epoch, self._batches = epoch, [batches[i].tolist() for i in shuffle]
        return self._batches

    def batch(self, update: int) -> list[int]:
        epoch, index = divmod(update, self.batches_per_epoch)
        return self.epoch(epoch)[index]


class BatchMaker:
    """Utterances -> a masked feature batch (reading, cropping, features, masks)."""

    def __init__(self, settings: PretrainSettings):
        self.settings = settings
        self.extractor = FeatureExtractor(settings.model.frontend)
        self.max_samples = round(settings.data.max_seconds * settings.model.frontend.sample_rate)

    def min_samples(self) -> int:
        """Shortest waveform long enough to mask."""
        rate = self.settings.downsample_rate
        return self.extractor.min_samples(self.settings.masking.min_stacked_frames(rate) * rate)

    def make(self, utterances: Sequence[Utterance], generators: Sequence[torch.Generator], random_crop: bool) -> MaskedBatch:
        """Each utterance uses its own generator: first for its crop, then for its mask."""
        wavs, kept, unreadable = [], [], []
        for utterance, generator in zip(utterances, generators):
            wav = self._read(utterance)
            if wav is None:
                unreadable.append(str(utterance.path))
                continue
            if wav.numel() > self.max_samples:
                offset = int(torch.randint(wav.numel() - self.max_samples + 1, (), generator=generator)) if random_crop else 0
                wav = wav[offset : offset + self.max_samples]
            wavs.append(wav)
            kept.append((utterance.utt_id, generator))
        if not wavs:
            return self._empty(unreadable)
        with torch.no_grad():
            features = self.extractor(wavs, with_target=True)
        frontend = self.settings.model.frontend
        masked, selected = mask_frames(
            features.inputs,
            features.lengths,
            [g for _, g in kept],
            self.settings.masking,
            self.settings.downsample_rate,
            frontend.base_dim,
        )
        return MaskedBatch(
            inputs=masked,
            clean_inputs=features.inputs,
            lengths=features.lengths,
            targets=features.targets,
            selected=selected,
            utt_ids=[utt_id for utt_id, _ in kept],
            unreadable=unreadable,
        )

    def _read(self, utterance: Utterance) -> Optional[torch.Tensor]:
        try:
            return read_audio(utterance.path, self.settings.model.frontend.sample_rate)
        except ValueError as error:
            if self.settings.corpus.on_unreadable == "stop":
                raise ValueError(f"{error} (set corpus.on_unreadable=skip to skip such files)") from error
            warnings.warn(f"skipping unreadable audio file {utterance.path}: {error}", stacklevel=2)
            return None

    def _empty(self, unreadable: list[str]) -> MaskedBatch:
        frontend = self.settings.model.frontend
        empty = torch.zeros(0, 0, frontend.feature_dim)
        return MaskedBatch(
            inputs=empty,
            clean_inputs=empty,
            lengths=torch.zeros(0, dtype=torch.long),
            targets=torch.zeros(0, 0, frontend.target_dim),
            selected=torch.zeros(0, 0, dtype=torch.bool),
            utt_ids=[],
            unreadable=unreadable,
        )


class TrainingBatches(Dataset):
    """Item ``k`` is this process's share of micro-batch ``k % accumulation`` of update
    ``k // accumulation``: the global batch is cut into world_size * accumulation contiguous
    (length-sorted) parts, part ``micro * world_size + rank`` belongs here."""

    def __init__(
        self,
        utterances: Sequence[Utterance],
        settings: PretrainSettings,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.utterances = list(utterances)
        self.settings = settings
        self.rank, self.world_size = rank, world_size
        self.accumulation = settings.runner.gradient_accumulate_steps
        parts = world_size * self.accumulation
        if settings.data.batch_size < parts:
            raise ValueError(
                f"data.batch_size={settings.data.batch_size} cannot be split over {world_size} process(es) x "
                f"{self.accumulation} accumulation step(s); raise it to at least {parts}"
            )
        self.maker = BatchMaker(settings)
        max_samples = self.maker.max_samples
        rate = settings.model.frontend.sample_rate
        self.plan = BatchPlan(
            [min(samples_at(u, rate), max_samples) for u in self.utterances],
            settings.data.batch_size,
            settings.data.bucket_batches,
            settings.runner.seed,
        )

    def __len__(self) -> int:
        return self.settings.runner.total_steps * self.accumulation

    def __getitem__(self, index: int) -> MaskedBatch:
        update, micro = divmod(index, self.accumulation)
        batch = self.plan.batch(update)
        parts = np.array_split(np.arange(len(batch)), self.world_size * self.accumulation)
        positions = parts[micro * self.world_size + self.rank].tolist()
        seed = self.settings.runner.seed
        return self.maker.make(
            [self.utterances[batch[p]] for p in positions],
            [seeded_generator(seed, TRAIN_ITEM, update, p) for p in positions],
            random_crop=True,
        )


def _setup_worker(_: int) -> None:
    # Each worker computes features for whole micro-batches; several threads per worker would
    # only fight the training process for the same cores.
    torch.set_num_threads(1)
    ignore_interrupts_in_worker()  # Ctrl-C: the main process stops at the next step boundary


def training_loader(dataset: TrainingBatches, start_update: int, stop_update: int, pin_memory: bool) -> DataLoader:
    """Micro-batches of updates [start_update, stop_update), in order."""
    accumulation = dataset.accumulation
    workers = dataset.settings.data.num_workers
    return DataLoader(
        dataset,
        batch_size=None,  # items are already batches
        sampler=range(start_update * accumulation, stop_update * accumulation),
        num_workers=workers,
        worker_init_fn=_setup_worker if workers else None,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
    )


def dev_batches(utterances: Sequence[Utterance], settings: PretrainSettings, micro_batch: int) -> list[MaskedBatch]:
    """The held-out set: each utterance's head (up to data.max_seconds) with a fixed mask, so the
    masked L1 on it is comparable from step to step."""
    maker = BatchMaker(settings)
    seed = settings.runner.seed
    batches = []
    for start in range(0, len(utterances), micro_batch):
        chunk = utterances[start : start + micro_batch]
        generators = [seeded_generator(seed, DEV_ITEM, start + i) for i in range(len(chunk))]
        batch = maker.make(chunk, generators, random_crop=False)
        if len(batch):
            batches.append(batch)
    return batches
