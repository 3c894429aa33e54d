"""The training data loader: manifest + feature cache + symbol table -> typed, padded batches."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from voicetrain.data.cache import FeatureStats, cache_path, load_features
from voicetrain.data.manifest import PreparedDataset, Utterance
from voicetrain.text.symbols import SymbolTable


class DataItemError(Exception):
    """One utterance cannot be loaded; the message names it and the fix."""


@dataclass
class Item:
    id: str
    tokens: torch.Tensor  # (L,) long
    mel: torch.Tensor  # (n_mels, T) normalized
    pitch: torch.Tensor  # (T,) normalized log-F0, 0 where unvoiced
    voiced: torch.Tensor  # (T,) bool
    energy: torch.Tensor  # (T,) normalized
    speaker: int


@dataclass
class Batch:
    """A padded batch. Shapes: B batch, L tokens, T mel frames, M mel bins."""

    ids: list[str]
    tokens: torch.Tensor  # (B, L) long, 0 = padding
    token_lens: torch.Tensor  # (B,)
    mels: torch.Tensor  # (B, M, T)
    mel_lens: torch.Tensor  # (B,)
    pitch: torch.Tensor  # (B, T)
    voiced: torch.Tensor  # (B, T) bool
    energy: torch.Tensor  # (B, T)
    speakers: torch.Tensor  # (B,) long

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.ids, *(getattr(self, f).to(device) for f in
                                 ("tokens", "token_lens", "mels", "mel_lens", "pitch", "voiced", "energy", "speakers")))

    def __len__(self) -> int:
        return len(self.ids)


class TTSDataset(Dataset):
    """Items of one split of a prepared dataset, normalized with the run's statistics.

    ``speakers`` is the run's speaker table (name -> id); fine-tuning passes an
    extended table so ids stay stable.
    """

    def __init__(self, dataset: PreparedDataset, split: str | list[Utterance], symbols: SymbolTable,
                 stats: FeatureStats, speakers: dict[str, int]):
        self.root = dataset.root
        self.audio_cfg = dataset.info.audio
        self.utts = dataset.manifest(split) if isinstance(split, str) else list(split)
        self.symbols = symbols
        self.speakers = speakers
        self.mel_mean = torch.tensor(stats.mel_mean).unsqueeze(1)
        self.mel_std = torch.tensor(stats.mel_std).unsqueeze(1)
        self.stats = stats
        self.lengths = [u.n_frames or int(u.duration * self.audio_cfg.frames_per_second) + 1 for u in self.utts]

    def __len__(self) -> int:
        return len(self.utts)

    def feature_path(self, u: Utterance) -> Path:
        return cache_path(self.root, self.audio_cfg, u.audio_hash)

    def __getitem__(self, i: int) -> Item:
        u = self.utts[i]
        path = self.feature_path(u)
        try:
            f = load_features(path)
        except FileNotFoundError:
            raise DataItemError(f"{u.id}: feature file {path} is missing; re-run `voicetrain prepare` to rebuild the cache") from None
        except Exception as e:  # noqa: BLE001 - numpy raises several types for damaged files
            raise DataItemError(f"{u.id}: feature file {path} is damaged ({e}); delete it and re-run `voicetrain prepare`") from None
        mel, f0, energy = f.get("mel"), f.get("f0"), f.get("energy")
        if mel is None or f0 is None or energy is None:
            raise DataItemError(f"{u.id}: feature file {path} lacks mel/f0/energy; delete it and re-run `voicetrain prepare`")
        if mel.ndim != 2 or mel.shape[0] != self.audio_cfg.n_mels:
            raise DataItemError(f"{u.id}: mel has shape {mel.shape}, expected ({self.audio_cfg.n_mels}, T); re-run `voicetrain prepare`")
        T = mel.shape[1]
        if len(f0) != T or len(energy) != T:
            raise DataItemError(f"{u.id}: mel has {T} frames but f0 {len(f0)} and energy {len(energy)}; re-run `voicetrain prepare`")
        if not (np.isfinite(mel).all() and np.isfinite(f0).all() and np.isfinite(energy).all()):
            raise DataItemError(f"{u.id}: features contain NaN/Inf; delete {path} and re-run `voicetrain prepare`")
        ids, unknown = self.symbols.encode(u.phonemes)
        if unknown:
            raise DataItemError(f"{u.id}: phonemes contain symbols missing from the symbol table: {sorted(set(unknown))}")
        if not ids:
            raise DataItemError(f"{u.id}: empty phoneme sequence; fix the transcript and re-run `voicetrain prepare`")
        if u.speaker not in self.speakers:
            raise DataItemError(f"{u.id}: speaker {u.speaker!r} is not in the speaker table {sorted(self.speakers)}")
        if T < len(ids):
            raise DataItemError(f"{u.id}: {len(ids)} phonemes but only {T} mel frames; the transcript is too long for the audio")
        voiced = f0 > 0
        mu = self.stats.log_f0_mean.get(u.speaker, float(np.mean(list(self.stats.log_f0_mean.values()))))
        sd = self.stats.log_f0_std.get(u.speaker, 0.2)
        pitch = np.where(voiced, (np.log(np.maximum(f0, 1.0)) - mu) / sd, 0.0).astype(np.float32)
        return Item(
            id=u.id,
            tokens=torch.tensor(ids, dtype=torch.long),
            mel=(torch.from_numpy(mel) - self.mel_mean) / self.mel_std,
            pitch=torch.from_numpy(pitch),
            voiced=torch.from_numpy(voiced),
            energy=torch.from_numpy((energy - self.stats.energy_mean) / self.stats.energy_std).float(),
            speaker=self.speakers[u.speaker],
        )


def _round_up(n: int, multiple: int) -> int:
    return -(-n // max(multiple, 1)) * max(multiple, 1)


def collate(items: list[Item], frame_multiple: int = 1, token_multiple: int = 1) -> Batch:
    """Pad items into a batch; lengths may be rounded up to multiples (see ``padded_collate``)."""
    B = len(items)
    L = _round_up(max(len(it.tokens) for it in items), token_multiple)
    T = _round_up(max(it.mel.shape[1] for it in items), frame_multiple)
    M = items[0].mel.shape[0]
    tokens = torch.zeros(B, L, dtype=torch.long)
    mels = torch.zeros(B, M, T)
    pitch = torch.zeros(B, T)
    voiced = torch.zeros(B, T, dtype=torch.bool)
    energy = torch.zeros(B, T)
    for b, it in enumerate(items):
        n, t = len(it.tokens), it.mel.shape[1]
        tokens[b, :n] = it.tokens
        mels[b, :, :t] = it.mel
        pitch[b, :t] = it.pitch
        voiced[b, :t] = it.voiced
        energy[b, :t] = it.energy
    return Batch(
        ids=[it.id for it in items], tokens=tokens,
        token_lens=torch.tensor([len(it.tokens) for it in items]),
        mels=mels, mel_lens=torch.tensor([it.mel.shape[1] for it in items]),
        pitch=pitch, voiced=voiced, energy=energy,
        speakers=torch.tensor([it.speaker for it in items], dtype=torch.long),
    )


def padded_collate(items: list[Item]) -> Batch:
    """Training collate: frames padded to a multiple of 32 and tokens of 8.

    With exact lengths nearly every batch has new tensor shapes; glibc's heap then
    fragments and a training process's RSS grows for as long as it runs (0.8 -> 2.1 GB in
    15 minutes, measured). Rounding makes allocation sizes recur, so freed blocks are
    reused; the extra padding is masked out of every loss and costs ~5% compute.
    """
    return collate(items, frame_multiple=32, token_multiple=8)


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process under torch.distributed (DDP), else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_batches(plan: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """This rank's share of an epoch's batch ``plan``: every ``world_size``-th batch from ``rank`` on,
    ``len(plan) // world_size`` of them on every rank (the last ``len(plan) % world_size`` batches are
    left out this epoch), so ranks step in lockstep and never wait on one another. With fewer batches
    than ranks each rank takes one, some repeated."""
    if world_size <= 1:
        return plan
    n = len(plan) // world_size
    if n == 0:
        return [plan[rank % len(plan)]] if plan else []
    return plan[rank::world_size][:n]


def sharded_len(n_batches: int, world_size: int) -> int:
    """len(shard_batches(plan, rank, world_size)) for a plan of ``n_batches``."""
    if world_size <= 1 or not n_batches:
        return n_batches
    return max(n_batches // world_size, 1)


class Sharded:
    """Mixin of the training batch samplers: their rank and world size under DDP.

    Lightning is told not to put its DistributedSampler in (``use_distributed_sampler=False``, training/loop.py):
    the samplers shard their own (seed, epoch) plan, so every rank sees different batches of the same plan.
    ``rank``/``world_size`` given explicitly win; otherwise they are read from torch.distributed when the batches
    are drawn (the process group exists only once ``fit`` has started)."""

    rank: int | None = None
    world_size: int | None = None
    shard: bool = True

    def rank_and_world_size(self) -> tuple[int, int]:
        if not self.shard:
            return 0, 1
        found = process_rank()
        return (found[0] if self.rank is None else self.rank,
                found[1] if self.world_size is None else self.world_size)


def skip_consumed(sampler) -> list[list[int]]:
    """``sampler.batches()`` for its current epoch, less the batches a resumed epoch already consumed.

    ``sampler.skip = (epoch, batches_done)`` comes from the checkpoint a run resumes from; it applies
    once, to that epoch: a resumed run then sees exactly the batches an uninterrupted one would. Under DDP
    ``batches()`` is this rank's share and ``batches_done`` counts this rank's batches (Lightning's progress
    counters are per process), so the skip stays exact on every rank.
    """
    batches = sampler.batches()
    if sampler.skip is not None and sampler.skip[0] == sampler.epoch:
        batches = batches[sampler.skip[1]:]
        sampler.skip = None
    return batches


class BucketBatchSampler(Sharded, Sampler[list[int]]):
    """Length-bucketed batches in a deterministic order for (seed, epoch).

    Utterances of similar length share a batch (little padding, so little wasted
    compute); the order of batches is shuffled per epoch from ``seed + epoch`` so a
    resumed run sees exactly the batches it would have seen. Under DDP each rank takes its
    share of that plan (:func:`shard_batches`); ``shard`` defaults to ``shuffle``: the ordered
    samplers (validation, align, check) give every process every batch.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = False, skip: tuple[int, int] | None = None, *, shard: bool | None = None,
                 rank: int | None = None, world_size: int | None = None, short_first_epochs: int = 0):
        self.shard = shuffle if shard is None else shard
        self.rank, self.world_size = rank, world_size
        self.skip = skip
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.short_first_epochs = short_first_epochs
        """Curriculum: epoch e < this trains on the shortest share 0.3 + 0.7 e / this of the utterances."""
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> "BucketBatchSampler":
        """Lightning calls ``set_epoch`` on ``dataloader.batch_sampler.sampler`` (never on the
        batch sampler itself): pointing it here is what makes each epoch's order differ."""
        return self

    def batches(self) -> list[list[int]]:
        """This rank's batches of the epoch (all of them in a single process)."""
        return shard_batches(self.plan(), *self.rank_and_world_size())

    def plan(self) -> list[list[int]]:
        """Every batch of the epoch, in order: a pure function of (seed, epoch), the same on every rank."""
        rng = np.random.default_rng(self.seed + self.epoch)
        idx = np.arange(len(self.lengths))
        if self.shuffle:
            # jitter lengths slightly so buckets differ between epochs
            keys = np.asarray(self.lengths, dtype=np.float64) * rng.uniform(0.9, 1.1, len(idx))
        else:
            keys = np.asarray(self.lengths, dtype=np.float64)
        order = idx[np.argsort(keys, kind="stable")]
        if self.shuffle and self.epoch < self.short_first_epochs:  # short utterances first (curriculum)
            share = 0.3 + 0.7 * self.epoch / self.short_first_epochs
            order = order[: max(self.batch_size, int(round(share * len(order))))]
        batches = [order[i:i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size and len(batches) > 1:
            batches.pop()
        if self.shuffle:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from skip_consumed(self)

    def __len__(self) -> int:
        n = len(self.lengths)
        total = n // self.batch_size if self.drop_last and n >= self.batch_size * 2 else math.ceil(n / self.batch_size)
        return sharded_len(total, self.rank_and_world_size()[1])
