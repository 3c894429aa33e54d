"""Leading/trailing silence trimming: energy-based (default) or silero-vad."""

from __future__ import annotations

import numpy as np


def energy_bounds(audio: np.ndarray, sr: int, top_db: float = 40.0, pad_seconds: float = 0.05) -> tuple[int, int]:
    """(start, end) sample indices of what :func:`trim_energy` keeps."""
    import librosa

    if audio.size == 0:
        return 0, 0
    _, (start, end) = librosa.effects.trim(audio, top_db=top_db, frame_length=1024, hop_length=256)
    pad = int(pad_seconds * sr)
    return max(0, start - pad), min(len(audio), end + pad)


def trim_energy(audio: np.ndarray, sr: int, top_db: float = 40.0, pad_seconds: float = 0.05) -> np.ndarray:
    """Cut leading and trailing audio quieter than ``top_db`` below the peak, keeping a short pad."""
    start, end = energy_bounds(audio, sr, top_db, pad_seconds)
    return audio[start:end]


def load_silero_model():
    """Load silero-vad's model (shipped in its PyPI package).

    ``import silero_vad`` sets torch's thread count to 1 for the whole process;
    the previous count is restored here.
    """
    import torch

    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad
    finally:
        torch.set_num_threads(threads)
    return load_silero_vad()


def trim_silero(audio: np.ndarray, sr: int, pad_seconds: float = 0.05, model=None) -> np.ndarray:
    """Trim with silero-vad's speech timestamps.

    ``model`` from :func:`load_silero_model` lets a caller load it once for many
    utterances (the load takes ~0.1 s); without it, it is loaded per call.
    """
    import soxr
    import torch

    if model is None:
        model = load_silero_model()
    threads = torch.get_num_threads()
    try:
        from silero_vad import get_speech_timestamps
    finally:
        torch.set_num_threads(threads)
    x16 = soxr.resample(audio, sr, 16000).astype(np.float32)
    stamps = get_speech_timestamps(torch.from_numpy(x16), model, sampling_rate=16000)
    if not stamps:
        return audio[:0]
    scale = sr / 16000
    pad = int(pad_seconds * sr)
    start = max(0, int(stamps[0]["start"] * scale) - pad)
    end = min(len(audio), int(stamps[-1]["end"] * scale) + pad)
    return audio[start:end]
