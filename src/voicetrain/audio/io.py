"""Load, resample, normalize and save audio. Pure functions; source files are only read."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from voicetrain.fileio import atomic_path

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


class AudioReadError(Exception):
    """An audio file could not be decoded; the message names the file and the cause."""


def load_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode ``path`` to float32 samples of shape (channels, samples) and its sample rate.

    wav, flac and ogg are read by libsndfile; mp3 falls back to ffmpeg when the
    installed libsndfile lacks mp3 support.
    """
    path = Path(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T), int(sr)
    except Exception as e:  # noqa: BLE001 - libsndfile raises several types
        if path.suffix.lower() == ".mp3":
            return _load_with_ffmpeg(path)
        raise AudioReadError(f"{path}: cannot decode audio ({e})") from None


def _load_with_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    try:
        probe = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-"],
            capture_output=True, check=True,
        )
    except (OSError, subprocess.CalledProcessError) as e:
        raise AudioReadError(f"{path}: cannot decode mp3 ({e})") from None
    info = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=sample_rate",
                           "-of", "default=nw=1:nk=1", str(path)], capture_output=True, text=True)
    sr = int(info.stdout.strip().splitlines()[0])
    return np.frombuffer(probe.stdout, dtype=np.float32)[None, :].copy(), sr


def load_mono(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode ``path`` (see :func:`load_audio`) and average its channels: (samples,) float32 and the rate."""
    audio, sr = load_audio(path)
    return to_mono(audio), sr


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(channels, samples) -> (samples,) by averaging channels."""
    return audio.mean(axis=0) if audio.ndim == 2 else audio


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """High-quality resampling with soxr; a no-op when the rates match."""
    if orig_sr == target_sr:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, orig_sr, target_sr, quality="HQ").astype(np.float32)


def loudness_normalize(audio: np.ndarray, sr: int, target_lufs: float = -23.0) -> np.ndarray:
    """Scale to ``target_lufs`` integrated loudness (ITU-R BS.1770 via pyloudnorm).

    The gain is limited so that the peak stays below full scale.
    """
    import pyloudnorm

    if len(audio) < int(0.4 * sr):  # BS.1770 needs one 400 ms block
        return audio
    meter = pyloudnorm.Meter(sr)
    loudness = meter.integrated_loudness(audio.astype(np.float64))
    if not np.isfinite(loudness):
        return audio
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    peak = float(np.max(np.abs(audio))) or 1.0
    gain = min(gain, 0.99 / peak)
    return (audio * gain).astype(np.float32)


def integrated_loudness(audio: np.ndarray, sr: int) -> float:
    import pyloudnorm

    if len(audio) < int(0.4 * sr):
        return float("nan")
    return float(pyloudnorm.Meter(sr).integrated_loudness(audio.astype(np.float64)))


def save_wav(path: str | os.PathLike, audio: np.ndarray, sr: int) -> None:
    """Write 16-bit PCM atomically (see voicetrain.fileio)."""
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(tmp, np.clip(audio, -1.0, 1.0), sr, subtype="PCM_16")
