"""The prepared dataset on disk: its info file and JSONL manifests, written atomically.

Layout of a prepared DATASET folder::

    dataset.yaml        DatasetInfo: audio/text/QC configs, speakers, source, counts
    symbols.json        SymbolTable built from the dataset's phonemes
    train.jsonl         one Utterance per line
    val.jsonl
    metadata.csv        LJSpeech/Coqui-compatible  id|text|normalized text
    wavs/SPEAKER/ID.wav 16-bit PCM at audio.sample_rate, trimmed and loudness-normalized
    cache/FEATHASH/AUDIOHASH.npz   mel (n_mels, T), f0 (T,), energy (T,)
    stats.json          feature statistics (see voicetrain.data.cache.FeatureStats)
    qc.json             per-utterance QC results and the quarantine list with reasons
    report.html, plots/ the preparation report
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from voicetrain.config import AudioConfig, QCConfig, TextConfig, load_yaml, save_yaml
from voicetrain.fileio import atomic_write_text


@dataclass
class Utterance:
    id: str
    speaker: str
    audio: str
    """Path of the prepared wav, relative to the dataset folder."""
    text: str
    normalized: str
    phonemes: str
    duration: float
    """Seconds, after trimming."""
    audio_hash: str = ""
    """sha256 (first 16 hex) of the prepared wav's samples: the feature cache key."""
    n_frames: int = 0
    source: str = ""
    """The original file this utterance came from (never modified)."""


@dataclass(frozen=True)
class DatasetInfo:
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)
    qc: QCConfig = field(default_factory=QCConfig)
    speakers: list[str] = field(default_factory=list)
    source: str = ""
    format: str = ""
    n_train: int = 0
    n_val: int = 0
    hours: float = 0.0


def write_jsonl(path: str | os.PathLike, rows: list) -> None:
    lines = [json.dumps(asdict(r) if hasattr(r, "__dataclass_fields__") else r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
    out = []
    path = Path(path)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Utterance(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path}:{n}: malformed manifest line ({e}); re-run `voicetrain prepare`") from None
    return out


@dataclass
class PreparedDataset:
    """A handle on a prepared DATASET folder."""

    root: Path
    info: DatasetInfo

    @classmethod
    def open(cls, root: str | os.PathLike) -> "PreparedDataset":
        root = Path(root)
        if not (root / "dataset.yaml").exists():
            raise FileNotFoundError(
                f"{root} is not a prepared dataset (no dataset.yaml); run `voicetrain prepare INPUT --out {root}` first"
            )
        return cls(root, load_yaml(DatasetInfo, root / "dataset.yaml"))

    def save_info(self) -> None:
        save_yaml(self.info, self.root / "dataset.yaml")

    def manifest(self, split: str) -> list[Utterance]:
        return read_manifest(self.root / f"{split}.jsonl")

    @property
    def symbols_path(self) -> Path:
        return self.root / "symbols.json"

    @property
    def stats_path(self) -> Path:
        return self.root / "stats.json"
