"""Feature cache keyed by audio content hash + feature-config hash, and dataset statistics.

A changed AudioConfig gives a new feature hash and so a new cache folder: stale
features are never reused. Training reads features from here and never recomputes them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from voicetrain.config import AudioConfig
from voicetrain.fileio import atomic_write_bytes, atomic_write_json

FEATURE_VERSION = 1
"""Bump when feature extraction code changes meaning (invalidates every cache)."""


def audio_hash(samples: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float32).tobytes()).hexdigest()[:16]


def feature_config_hash(cfg: AudioConfig) -> str:
    blob = json.dumps({"v": FEATURE_VERSION, **asdict(cfg)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def cache_path(dataset_root: str | os.PathLike, cfg: AudioConfig, a_hash: str) -> Path:
    return Path(dataset_root) / "cache" / feature_config_hash(cfg) / f"{a_hash}.npz"


def save_features(path: Path, feats: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **feats)
    atomic_write_bytes(path, buf.getvalue())


def load_features(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@dataclass
class FeatureStats:
    """Normalization statistics computed over the training split.

    mel_mean/mel_std are per mel bin; pitch statistics are over voiced frames of
    log-F0, per speaker (so the pitch predictor learns speaker-relative contours);
    energy statistics are global.
    """

    mel_mean: list[float]
    mel_std: list[float]
    log_f0_mean: dict[str, float]
    log_f0_std: dict[str, float]
    energy_mean: float
    energy_std: float

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStats":
        return cls(**json.loads(Path(path).read_text()))

    @classmethod
    def compute(cls, items: list[tuple[str, dict[str, np.ndarray]]]) -> "FeatureStats":
        """``items``: (speaker, features) pairs."""
        n_mels = items[0][1]["mel"].shape[0]
        s = np.zeros(n_mels, np.float64)
        s2 = np.zeros(n_mels, np.float64)
        n = 0
        f0_by_spk: dict[str, list[np.ndarray]] = {}
        energies = []
        for spk, f in items:
            mel = f["mel"].astype(np.float64)
            s += mel.sum(1)
            s2 += (mel ** 2).sum(1)
            n += mel.shape[1]
            voiced = f["f0"][f["f0"] > 0]
            f0_by_spk.setdefault(spk, []).append(np.log(voiced))
            energies.append(f["energy"])
        mean = s / max(n, 1)
        std = np.sqrt(np.maximum(s2 / max(n, 1) - mean ** 2, 1e-8))
        f0_mean, f0_std = {}, {}
        for spk, chunks in f0_by_spk.items():
            allf = np.concatenate(chunks) if chunks else np.zeros(0)
            f0_mean[spk] = float(allf.mean()) if allf.size else float(np.log(120.0))
            f0_std[spk] = float(max(allf.std(), 1e-3)) if allf.size > 1 else 0.2
        e = np.concatenate(energies)
        return cls(mean.tolist(), std.tolist(), f0_mean, f0_std, float(e.mean()), float(max(e.std(), 1e-6)))
