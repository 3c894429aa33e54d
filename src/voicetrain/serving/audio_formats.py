"""Audio encodings of the OpenAI-compatible endpoint (pure functions): wav, pcm, flac, mp3, opus.

Everything is mono 16-bit at the voice's sample rate, except opus: the Opus codec takes only
8, 12, 16, 24 or 48 kHz, so the audio is resampled (soxr) to the lowest of those at or above
the voice's rate (24 kHz for a 22.05 kHz voice). flac, mp3 and opus are written by libsndfile
through soundfile (libsndfile >= 1.1 encodes MP3 with LAME and Ogg/Opus); aac is not offered:
nothing in the dependency set encodes it (ffmpeg would, but it is not a Python dependency).

wav and pcm can be streamed: pcm is headerless, and a streamed wav has a header whose two
length fields say 0xFFFFFFFF ("unknown length", as OpenAI's streamed wav does), which
soundfile, Python's wave module and ffmpeg read to the end of the data.
"""

from __future__ import annotations

import io
import struct

import numpy as np

MEDIA_TYPES = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
}
FORMATS = tuple(MEDIA_TYPES)
STREAMABLE = frozenset({"wav", "pcm"})
"""Formats whose bytes can go out sentence by sentence; the others are encoded once, whole."""
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_SOUNDFILE = {"flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}
UNKNOWN_LENGTH = 0xFFFFFFFF


def pcm16(audio: np.ndarray) -> bytes:
    """float32 samples in [-1, 1] -> 16-bit signed little-endian bytes (clipped, rounded)."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def wav_header(sample_rate: int, n_samples: int | None = None) -> bytes:
    """The 44-byte header of a mono 16-bit PCM wav; ``n_samples`` None writes the unknown-length header."""
    if n_samples is None:
        riff = data = UNKNOWN_LENGTH
    else:
        data = 2 * n_samples
        riff = 36 + data
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16)
            + b"data" + struct.pack("<I", data))


def opus_rate(sample_rate: int) -> int:
    """The Opus rate the audio is resampled to: the lowest one at or above ``sample_rate`` (48 kHz at most)."""
    return next((r for r in OPUS_RATES if r >= sample_rate), OPUS_RATES[-1])


def encode(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Whole audio (float32, mono) -> the bytes of a ``fmt`` file (one of FORMATS)."""
    if fmt == "pcm":
        return pcm16(audio)
    if fmt == "wav":
        return wav_header(sample_rate, len(audio)) + pcm16(audio)
    if fmt not in _SOUNDFILE:
        raise ValueError(f"unknown audio format {fmt!r}; one of {', '.join(FORMATS)}")
    import soundfile as sf

    if fmt == "opus" and sample_rate not in OPUS_RATES:
        import soxr

        target = opus_rate(sample_rate)
        audio = soxr.resample(audio, sample_rate, target, quality="HQ").astype(np.float32)
        sample_rate = target
    container, subtype = _SOUNDFILE[fmt]
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sample_rate, format=container, subtype=subtype)
    return buf.getvalue()
