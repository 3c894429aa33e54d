"""A voicetrain prepared DATASET as the input Piper's trainer (``python -m piper.train fit``) expects.

Piper 1.8.0's ``VitsDataModule`` reads a ``|``-delimited CSV through :func:`csv.reader` (so a text
holding ``|`` or ``"`` must be quoted the csv way): ``AUDIO|text`` for one speaker,
``AUDIO|SPEAKER|text`` for several, with AUDIO relative to ``--data.audio_dir`` (sub-folders
allowed). It phonemizes the text with its own espeak-ng, resamples to ``--model.sample_rate``
(22050) and trims silence itself, caching everything under ``--data.cache_dir``.

The CSV points at the prepared dataset's own wavs (already 22050 Hz mono, trimmed and
loudness-normalized by ``voicetrain prepare``), so both trainers learn from the same audio;
nothing in the dataset folder is written. Every prepared utterance (train and validation) goes
in: Piper holds out its own validation share (``--data.validation_split``, 10 %) at random.

Importable without piper (the tests run in voicetrain's venv).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from voicetrain.data.manifest import PreparedDataset
from voicetrain.fileio import atomic_write_text

PIPER_SAMPLE_RATE = 22050
"""Piper's 'medium' quality: the only rate its documented settings (hop 256, upsample 8x8x4) fit."""


@dataclass(frozen=True)
class PiperLayout:
    """Where the converted corpus lies and the trainer flags that go with it."""

    csv_path: Path
    audio_dir: Path
    espeak_voice: str
    sample_rate: int
    num_speakers: int
    n_utterances: int

    def fit_args(self) -> list[str]:
        """The ``--data.*``/``--model.*`` flags naming this corpus (see piper1-gpl docs/TRAINING.md)."""
        return ["--data.csv_path", str(self.csv_path), "--data.audio_dir", str(self.audio_dir),
                "--data.espeak_voice", self.espeak_voice, "--model.sample_rate", str(self.sample_rate),
                "--model.num_speakers", str(self.num_speakers)]


def to_piper_layout(dataset: str | Path, out: str | Path) -> PiperLayout:
    """Write ``OUT/metadata.csv`` for Piper's trainer from a prepared voicetrain dataset.

    Raises ValueError naming the dataset when its sample rate is not Piper's 22050 Hz or it holds
    no utterance (re-prepare it), and FileNotFoundError when a manifest names a missing wav.
    """
    ds = PreparedDataset.open(dataset)
    rate = ds.info.audio.sample_rate
    if rate != PIPER_SAMPLE_RATE:
        raise ValueError(f"{ds.root}/dataset.yaml: audio.sample_rate is {rate}; Piper's trainer is set up for "
                         f"{PIPER_SAMPLE_RATE} Hz: prepare the corpus again with sample_rate {PIPER_SAMPLE_RATE}")
    utts = ds.manifest("train") + ds.manifest("val")
    if not utts:
        raise ValueError(f"{ds.root}: train.jsonl and val.jsonl hold no utterance; re-run `voicetrain prepare`")
    speakers = sorted({u.speaker for u in utts})
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="|", lineterminator="\n")
    for u in utts:
        if not (ds.root / u.audio).is_file():
            raise FileNotFoundError(f"{ds.root}/{u.audio} (utterance {u.id}) is missing; re-run `voicetrain prepare`")
        # the transcript as recorded, not voicetrain's normalization: Piper phonemizes it itself
        text = " ".join(u.text.split())
        writer.writerow([u.audio, u.speaker, text] if len(speakers) > 1 else [u.audio, text])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "metadata.csv"
    atomic_write_text(csv_path, buf.getvalue())
    return PiperLayout(csv_path=csv_path.resolve(), audio_dir=ds.root.resolve(), espeak_voice=ds.info.text.language,
                       sample_rate=rate, num_speakers=len(speakers), n_utterances=len(utts))
