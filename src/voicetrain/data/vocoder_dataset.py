"""Vocoder training data: (log-mel segment, the audio it was computed from) pairs from a prepared dataset.

Mels come from the feature cache (never recomputed) or, for fine-tuning on an
acoustic model's own output, from a folder of generated mels named by each
utterance's audio hash. Audio is read from the prepared wav, only the samples of
the segment. Mel frame ``i`` is centred on sample ``i * hop`` (``torch.stft``,
``center=True``), so frames ``[s, s + n)`` pair with samples ``[s * hop, (s + n) * hop)``.

Random segment offsets are a pure function of (seed, sample key): the batch
sampler hands out keys ``epoch * N + index``, so an epoch's batches, and so a
resumed run's, are reproducible without any state in the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset, Sampler

from voicetrain.audio.features import LOG_FLOOR
from voicetrain.data.cache import cache_path, load_features
from voicetrain.data.dataset import DataItemError, Sharded, sharded_len, shard_batches, skip_consumed
from voicetrain.data.manifest import PreparedDataset, Utterance

SILENCE = float(np.log(LOG_FLOOR))
"""Log-mel value of digital silence: padding beyond the end of an utterance."""


@dataclass
class VocoderItem:
    id: str
    mel: torch.Tensor  # (n_mels, n) natural-log mel, un-normalized
    audio: torch.Tensor  # (n * hop,) float in [-1, 1]


@dataclass
class VocoderBatch:
    """Equal-length segments (training) or one utterance padded to the longest (validation)."""

    ids: list[str]
    mels: torch.Tensor  # (B, n_mels, n)
    audio: torch.Tensor  # (B, n * hop)

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device) -> "VocoderBatch":
        return VocoderBatch(self.ids, self.mels.to(device), self.audio.to(device))


def generated_mel_path(folder: str | Path, u: Utterance) -> Path:
    """Where a generated mel of ``u`` lives: named by audio hash (ids may repeat across speakers)."""
    return Path(folder) / f"{u.audio_hash}.npy"


class VocoderDataset(Dataset):
    """Items of a list of utterances. ``segment_frames`` None gives whole utterances (cut at ``max_frames``)."""

    def __init__(self, dataset: PreparedDataset, utts: list[Utterance], segment_frames: int | None, seed: int = 0,
                 mel_dir: str | Path | None = None, max_frames: int | None = None):
        self.root = dataset.root
        self.audio_cfg = dataset.info.audio
        self.utts = list(utts)
        self.segment_frames = segment_frames
        self.seed = seed
        self.mel_dir = Path(mel_dir) if mel_dir else None
        self.max_frames = max_frames

    def __len__(self) -> int:
        return len(self.utts)

    def _mel(self, u: Utterance) -> np.ndarray:
        if self.mel_dir is not None:
            path = generated_mel_path(self.mel_dir, u)
            try:
                mel = np.load(path, allow_pickle=False)
            except FileNotFoundError:
                raise DataItemError(f"{u.id}: generated mel {path} is missing; delete {self.mel_dir} "
                                    "to regenerate it") from None
        else:
            path = cache_path(self.root, self.audio_cfg, u.audio_hash)
            try:
                mel = load_features(path)["mel"]
            except FileNotFoundError:
                raise DataItemError(f"{u.id}: feature file {path} is missing; re-run `voicetrain prepare` "
                                    "to rebuild the cache") from None
            except Exception as e:  # noqa: BLE001 - numpy raises several types for damaged files
                raise DataItemError(f"{u.id}: feature file {path} is damaged ({e}); delete it and re-run "
                                    "`voicetrain prepare`") from None
        if mel.ndim != 2 or mel.shape[0] != self.audio_cfg.n_mels or not np.isfinite(mel).all():
            raise DataItemError(f"{u.id}: mel in {path} has shape {mel.shape} or non-finite values; expected "
                                f"({self.audio_cfg.n_mels}, T); re-run `voicetrain prepare`")
        return mel

    def _audio(self, u: Utterance, start: int, stop: int) -> np.ndarray:
        path = self.root / u.audio
        try:
            with sf.SoundFile(str(path)) as f:
                if f.samplerate != self.audio_cfg.sample_rate:
                    raise DataItemError(f"{u.id}: {path} is {f.samplerate} Hz, the dataset says "
                                        f"{self.audio_cfg.sample_rate}; re-run `voicetrain prepare`")
                f.seek(min(start, f.frames))
                x = f.read(max(0, min(stop, f.frames) - start), dtype="float32", always_2d=True)
        except (OSError, RuntimeError, sf.LibsndfileError) as e:
            raise DataItemError(f"{u.id}: cannot read {path} ({e}); re-run `voicetrain prepare`") from None
        x = x.mean(axis=1)
        return np.pad(x, (0, stop - start - len(x)))  # the last frame's right half lies past the end

    def __getitem__(self, key: int) -> VocoderItem:
        """``key``: a sample key from :class:`SegmentBatchSampler` (``epoch * N + index``) or a plain index."""
        u = self.utts[key % len(self.utts)]
        mel = self._mel(u)
        T = mel.shape[1]
        if self.segment_frames is None:
            n = min(T, self.max_frames or T)
            start = 0
        else:
            n = self.segment_frames
            rng = np.random.default_rng([self.seed, key])
            start = int(rng.integers(0, T - n + 1)) if T > n else 0
        seg = mel[:, start:start + n]
        if seg.shape[1] < n:  # an utterance shorter than a segment: pad with silence, both mel and audio
            seg = np.pad(seg, ((0, 0), (0, n - seg.shape[1])), constant_values=SILENCE)
        hop = self.audio_cfg.hop_length
        audio = self._audio(u, start * hop, (start + n) * hop)
        return VocoderItem(u.id, torch.from_numpy(np.ascontiguousarray(seg, dtype=np.float32)),
                           torch.from_numpy(audio.astype(np.float32)))


def collate_vocoder(items: list[VocoderItem]) -> VocoderBatch:
    """Pads to the longest item (silence for mels, zeros for audio); training segments are equal already."""
    n = max(it.mel.shape[1] for it in items)
    hop = items[0].audio.shape[0] // max(items[0].mel.shape[1], 1)
    mels = torch.full((len(items), items[0].mel.shape[0], n), SILENCE)
    audio = torch.zeros(len(items), n * hop)
    for b, it in enumerate(items):
        mels[b, :, : it.mel.shape[1]] = it.mel
        audio[b, : it.audio.shape[0]] = it.audio
    return VocoderBatch([it.id for it in items], mels, audio)


class _EpochRelay:
    """Stands in as ``batch_sampler.sampler``: Lightning calls ``set_epoch`` on a DataLoader's ``sampler`` and
    on ``batch_sampler.sampler``, never on the batch sampler itself, so without this the epoch stays 0."""

    def __init__(self, owner: "SegmentBatchSampler"):
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class SegmentBatchSampler(Sharded, Sampler[list[int]]):
    """Shuffled batches of sample keys ``epoch * N + index``, deterministic for (seed, epoch).

    ``skip=(epoch, batches)`` drops the batches a resumed epoch has already consumed.
    Incomplete last batches are dropped (the GAN sees equal batches) unless that would leave none.
    Under DDP each rank takes its share of the epoch's plan (data.dataset.shard_batches).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, skip: tuple[int, int] | None = None, *,
                 rank: int | None = None, world_size: int | None = None):
        self.rank, self.world_size = rank, world_size
        self.n = n
        self.batch_size = max(1, min(batch_size, n))
        self.seed = seed
        self.epoch = 0
        self.skip = skip
        self.sampler = _EpochRelay(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This rank's batches of the epoch (all of them in a single process)."""
        return shard_batches(self.plan(), *self.rank_and_world_size())

    def plan(self) -> list[list[int]]:
        """Every batch of the epoch: a pure function of (seed, epoch), the same on every rank."""
        order = np.random.default_rng(self.seed + self.epoch).permutation(self.n) + self.epoch * self.n
        full = (self.n // self.batch_size) * self.batch_size
        return [order[i:i + self.batch_size].tolist() for i in range(0, full, self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        yield from skip_consumed(self)

    def __len__(self) -> int:
        return sharded_len(max(self.n // self.batch_size, 1) if self.n else 0, self.rank_and_world_size()[1])


def write_teacher_forced_mels(model, symbols, stats, speaker_ids: dict[str, int], ds: PreparedDataset,
                              utts: list[Utterance], out_dir: Path) -> None:
    """An acoustic ``model``'s teacher-forced mels (aligner durations, real pitch and energy) for ``utts``, as
    un-normalized log-mels in OUT_DIR/AUDIOHASH.npy (:func:`generated_mel_path`), frame for frame aligned with
    the real audio: a vocoder fine-tuned on them learns the model's smoothing, not a different timing."""
    from voicetrain.data.dataset import TTSDataset, collate
    from voicetrain.fileio import atomic_path

    items = TTSDataset(ds, utts, symbols, stats, speaker_ids)
    mean = torch.tensor(stats.mel_mean)[:, None]
    std = torch.tensor(stats.mel_std)[:, None]
    model = model.eval()
    with torch.inference_mode():
        for i, u in enumerate(utts):
            b = collate([items[i]])
            out = model(b.tokens, b.token_lens, b.mels, b.mel_lens, b.pitch, b.voiced, b.energy, b.speakers)
            T = int(b.mel_lens[0])
            mel = out.mel[0, :, :T] * std + mean
            if mel.shape[1] < T:  # a reduction-factor decoder may stop short: hold the last frame
                mel = torch.cat([mel, mel[:, -1:].expand(-1, T - mel.shape[1])], dim=1)
            with atomic_path(generated_mel_path(out_dir, u), suffix=".npy") as tmp:
                np.save(tmp, np.ascontiguousarray(mel.float().numpy(), dtype=np.float32), allow_pickle=False)


__all__ = ["VocoderDataset", "VocoderBatch", "VocoderItem", "SegmentBatchSampler", "collate_vocoder",
           "generated_mel_path", "write_teacher_forced_mels", "SILENCE"]
