"""Evaluate a folder of wav files (or single utterances in memory) with every objective metric.

:func:`evaluate_utterance` scores one waveform and is what a run-level evaluation
calls on synthesized audio; :func:`evaluate_audio` applies it to every wav of a
folder, matching transcripts and same-named reference recordings, and is what
``voicetrain eval-audio`` calls.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from voicetrain.audio.io import load_mono
from voicetrain.config import AudioConfig
from voicetrain.evaluation import metrics
from voicetrain.evaluation.models import Evaluator
from voicetrain.evaluation.results import nan_to_none
from voicetrain.fileio import atomic_write_json

# ----------------------------------------------------------------------------- transcripts


class TranscriptError(ValueError):
    """A transcript file is malformed; the message names the file and line."""


def load_transcripts(path: str | os.PathLike) -> dict[str, str]:
    """Read ``id<TAB>text`` (TSV) or LJSpeech ``id|text[|normalized]`` (metadata.csv) into {id: text}.

    The format is chosen per file: a ``.csv`` file or a first line with ``|`` and no tab
    is pipe-separated. For LJSpeech rows the raw text (2nd column) is used, since
    scoring normalizes it the same way as the hypothesis. Blank lines and lines
    starting with ``#`` are skipped.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise TranscriptError(f"{path}: cannot read transcripts ({e})") from None
    first = next((ln for ln in lines if ln.strip() and not ln.startswith("#")), "")
    sep = "|" if path.suffix.lower() == ".csv" or ("|" in first and "\t" not in first) else "\t"
    out: dict[str, str] = {}
    rows = csv.reader(lines, delimiter=sep, quoting=csv.QUOTE_NONE)
    for lineno, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip() or row[0].startswith("#"):
            continue
        if len(row) < 2 or not row[0].strip():
            raise TranscriptError(f"{path}:{lineno}: expected 'id{'<TAB>' if sep == chr(9) else '|'}text', got {sep.join(row)!r}")
        key = Path(row[0].strip()).stem  # tolerate "wavs/x.wav" or "x.wav" as the id
        if key in out:
            raise TranscriptError(f"{path}:{lineno}: duplicate id {key!r}")
        out[key] = row[1].strip()
    return out


def _transcript_for(wav: Path, table: Mapping[str, str] | None) -> str | None:
    if table is not None and wav.stem in table:
        return table[wav.stem]
    txt = wav.with_suffix(".txt")
    if txt.is_file():
        return txt.read_text(encoding="utf-8").strip()
    return None


# ----------------------------------------------------------------------------- results


@dataclass
class UtteranceEval:
    """All metrics of one utterance; None where the metric did not apply (no text, no reference)."""

    id: str
    path: str
    duration: float
    """Seconds."""
    text: str | None = None
    hypothesis: str | None = None
    """The primary recognizer's transcript (Whisper unless --asr pocketsphinx), normalized for scoring."""
    wer: float | None = None
    """WER / CER of the primary recognizer (named by ``asr``)."""
    cer: float | None = None
    asr: str | None = None
    """Which recognizer filled hypothesis / wer / cer."""
    hypothesis_whisper: str | None = None
    wer_whisper: float | None = None
    cer_whisper: float | None = None
    hypothesis_pocketsphinx: str | None = None
    wer_pocketsphinx: float | None = None
    cer_pocketsphinx: float | None = None
    dnsmos_ovrl: float | None = None
    dnsmos_sig: float | None = None
    dnsmos_bak: float | None = None
    dnsmos_p808: float | None = None
    reference: str | None = None
    """Path of the reference recording compared with."""
    mcd_db: float | None = None
    f0_rmse_cents: float | None = None
    f0_rmse_hz: float | None = None
    voicing_error: float | None = None
    speaker_similarity: float | None = None
    """Cosine similarity to the mean embedding of the reference set."""


METRIC_FIELDS = ("wer", "cer", "wer_whisper", "cer_whisper", "wer_pocketsphinx", "cer_pocketsphinx", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808", "mcd_db",
                 "f0_rmse_cents", "f0_rmse_hz", "voicing_error", "speaker_similarity")


@dataclass
class AudioEvalResult:
    directory: str
    reference_dir: str | None
    utterances: list[UtteranceEval]
    means: dict[str, float]
    """Mean of each metric over the utterances where it is defined (NaNs skipped)."""
    counts: dict[str, int]
    """How many utterances each mean is over."""
    compute_seconds: dict[str, float] = field(default_factory=dict)
    """Total compute per metric ('asr_whisper', 'asr_pocketsphinx', 'dnsmos', 'reference', 'speaker')."""
    load_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready: NaN becomes None (JSON has no NaN)."""
        return nan_to_none(asdict(self))


def summarize(rows: list[UtteranceEval]) -> tuple[dict[str, float], dict[str, int]]:
    """Per-metric means over rows where the metric is a finite number, and those counts."""
    means, counts = {}, {}
    for name in METRIC_FIELDS:
        vals = [getattr(r, name) for r in rows]
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        counts[name] = len(vals)
        if vals:
            means[name] = float(np.mean(vals))
    return means, counts


# ----------------------------------------------------------------------------- evaluation


def _add_time(acc: dict[str, float] | None, key: str, t0: float) -> None:
    if acc is not None:
        acc[key] = acc.get(key, 0.0) + time.perf_counter() - t0


def evaluate_utterance(
    evaluator: Evaluator,
    audio: np.ndarray,
    sr: int,
    *,
    id: str = "",
    path: str = "",
    text: str | None = None,
    reference: tuple[np.ndarray, int] | None = None,
    reference_path: str | None = None,
    speaker_centroid: np.ndarray | None = None,
    dnsmos: bool = True,
    audio_cfg: AudioConfig = AudioConfig(),
    timings: dict[str, float] | None = None,
) -> UtteranceEval:
    """Score one (samples,) float waveform.

    ``text`` enables WER/CER by each of the evaluator's recognizers (the first fills
    ``wer``/``cer``/``hypothesis``), ``reference`` = (samples, sr) enables
    MCD-DTW, F0 RMSE and voicing error, ``speaker_centroid`` (dim,) enables speaker
    similarity, ``dnsmos`` the DNSMOS scores. ``timings`` (if given) accumulates
    compute seconds per metric.
    """
    row = UtteranceEval(id=id, path=path, duration=len(audio) / sr, text=text)
    if text is not None and text.strip():
        for i, name in enumerate(evaluator.asr_names):
            t0 = time.perf_counter()
            rates = metrics.error_rates(text, evaluator.asr_engine(name).transcribe(audio, sr))
            _add_time(timings, f"asr_{name}", t0)
            setattr(row, f"hypothesis_{name}", rates.hypothesis)
            setattr(row, f"wer_{name}", rates.wer)
            setattr(row, f"cer_{name}", rates.cer)
            if i == 0:
                row.asr, row.hypothesis, row.wer, row.cer = name, rates.hypothesis, rates.wer, rates.cer
    if dnsmos:
        t0 = time.perf_counter()
        s = evaluator.dnsmos.score(audio, sr)
        _add_time(timings, "dnsmos", t0)
        row.dnsmos_ovrl, row.dnsmos_sig, row.dnsmos_bak, row.dnsmos_p808 = s.ovrl, s.sig, s.bak, s.p808
    if reference is not None:
        t0 = time.perf_counter()
        d = metrics.reference_distance(audio, sr, reference[0], reference[1], audio_cfg)
        _add_time(timings, "reference", t0)
        row.reference = reference_path
        row.mcd_db, row.f0_rmse_cents, row.f0_rmse_hz, row.voicing_error = (
            d.mcd_db, d.f0_rmse_cents, d.f0_rmse_hz, d.voicing_error)
    if speaker_centroid is not None:
        t0 = time.perf_counter()
        emb = evaluator.speaker_encoder.embed(audio, sr)
        _add_time(timings, "speaker", t0)
        row.speaker_similarity = metrics.cosine_similarity(emb, speaker_centroid)
    return row


def list_wavs(directory: str | os.PathLike) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory")
    return sorted(p for p in directory.iterdir() if p.suffix.lower() == ".wav" and p.is_file())


def evaluate_audio(
    directory: str | os.PathLike,
    reference_dir: str | os.PathLike | None = None,
    texts: str | os.PathLike | Mapping[str, str] | None = None,
    *,
    evaluator: Evaluator | None = None,
    dnsmos: bool = True,
    audio_cfg: AudioConfig = AudioConfig(),
) -> AudioEvalResult:
    """Score every ``*.wav`` in ``directory``.

    Transcripts come from ``texts`` (a TSV / metadata.csv path or an {id: text}
    mapping, id = file stem), else a ``.txt`` beside the wav, else ``directory/metadata.csv``.
    With ``reference_dir``, a same-named wav there gives MCD-DTW / F0 / voicing
    error, and every wav there forms the speaker centroid for speaker similarity.
    """
    directory = Path(directory)
    wavs = list_wavs(directory)
    if not wavs:
        raise FileNotFoundError(f"{directory}: no .wav files to evaluate")
    evaluator = evaluator or Evaluator()
    if texts is None and (directory / "metadata.csv").is_file():
        texts = directory / "metadata.csv"
    table = texts if isinstance(texts, Mapping) or texts is None else load_transcripts(texts)

    timings: dict[str, float] = {}
    refs: dict[str, Path] = {}
    centroid = None
    if reference_dir is not None:
        ref_wavs = list_wavs(reference_dir)
        if not ref_wavs:
            raise FileNotFoundError(f"{reference_dir}: no reference .wav files")
        refs = {p.stem: p for p in ref_wavs}
        t0 = time.perf_counter()
        centroid = metrics.mean_embedding([evaluator.speaker_encoder.embed(*load_mono(p)) for p in ref_wavs])
        _add_time(timings, "speaker", t0)

    rows = []
    for wav in wavs:
        audio, sr = load_mono(wav)
        ref_path = refs.get(wav.stem)
        try:
            rows.append(evaluate_utterance(
                evaluator, audio, sr, id=wav.stem, path=str(wav), text=_transcript_for(wav, table),
                reference=load_mono(ref_path) if ref_path else None,
                reference_path=str(ref_path) if ref_path else None,
                speaker_centroid=centroid, dnsmos=dnsmos, audio_cfg=audio_cfg, timings=timings))
        except Exception as e:
            raise RuntimeError(f"{wav}: evaluation failed: {e}") from e
    means, counts = summarize(rows)
    return AudioEvalResult(directory=str(directory), reference_dir=str(reference_dir) if reference_dir else None,
                           utterances=rows, means=means, counts=counts, compute_seconds=timings,
                           load_seconds=dict(evaluator.load_seconds))


def write_json(result: AudioEvalResult, path: str | os.PathLike) -> None:
    atomic_write_json(path, result.to_dict(), indent=2)


# Short headers keep the table inside an 80-column terminal; the JSON has every field.
_TABLE_COLUMNS = {"wer": "WER", "cer": "CER", "cer_pocketsphinx": "CER ps", "dnsmos_ovrl": "MOS", "dnsmos_p808": "P808", "mcd_db": "MCD dB",
                  "f0_rmse_cents": "F0 ¢", "voicing_error": "V/UV", "speaker_similarity": "spk cos"}


def render_table(result: AudioEvalResult):
    """A rich Table: one row per utterance (the main metrics that apply) and a mean row."""
    from rich.table import Table

    shown = [f for f in _TABLE_COLUMNS if result.counts.get(f)]
    table = Table(title=f"{result.directory} ({len(result.utterances)} files)")
    table.add_column("id", no_wrap=True, overflow="ellipsis", max_width=24)
    for f in shown:
        table.add_column(_TABLE_COLUMNS[f], justify="right", no_wrap=True)

    def fmt(v):
        if v is None or not math.isfinite(v):
            return "-"
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}"

    for r in result.utterances:
        table.add_row(r.id, *(fmt(getattr(r, f)) for f in shown))
    table.add_section()
    table.add_row("[bold]mean[/bold]", *(fmt(result.means.get(f)) for f in shown))
    return table
