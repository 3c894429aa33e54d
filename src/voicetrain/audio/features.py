"""Acoustic features: log-mel spectrogram, frame energy and F0.

All features share one frame grid: ``torch.stft(center=True)`` with the hop of
:class:`~voicetrain.config.AudioConfig`, i.e. ``1 + n_samples // hop`` frames.
Mel tensors are (batch, n_mels, frames) everywhere in voicetrain.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from voicetrain.config import AudioConfig

LOG_FLOOR = 1e-5


def mel_filterbank(cfg: AudioConfig) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) Slaney-normalized mel filterbank."""
    import librosa

    fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                             fmin=cfg.f_min, fmax=cfg.f_max)
    return torch.from_numpy(fb).float()


class MelSpectrogram(nn.Module):
    """Waveform (batch, samples) -> log-mel (batch, n_mels, frames); filterbank and window are buffers."""

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)
        self.register_buffer("fb", mel_filterbank(cfg), persistent=False)

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wav, self.cfg.n_fft, self.cfg.hop_length, self.cfg.win_length,
                          window=self.window, center=True, pad_mode="reflect", return_complex=True)
        return spec.abs()

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        mag = self.magnitude(wav)
        return torch.log(torch.clamp(self.fb @ mag, min=LOG_FLOOR))


def log_mel(audio: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """(samples,) float waveform -> (n_mels, frames) float32 log-mel."""
    with torch.no_grad():
        mel = MelSpectrogram(cfg)(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None])
    return mel[0].numpy()


def f0_yin(audio: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """(frames,) fundamental frequency in Hz, 0 where unvoiced.

    YIN is ~1000x faster than pYIN here (0.02 s vs 30 s for 3.7 s of audio on this
    CPU) and needs no compiled extra. Its voicing decision is replaced by an energy and
    zero-crossing gate plus the YIN range check, which is enough for a variance predictor
    that only sees phoneme-averaged pitch.
    """
    import librosa

    frame = cfg.n_fft
    if len(audio) < frame:
        audio = np.pad(audio, (0, frame - len(audio)))
    f0 = librosa.yin(audio.astype(np.float32), fmin=cfg.f0_min, fmax=cfg.f0_max, sr=cfg.sample_rate,
                     frame_length=frame, hop_length=cfg.hop_length, center=True)
    rms = librosa.feature.rms(y=audio, frame_length=frame, hop_length=cfg.hop_length, center=True)[0]
    zcr = librosa.feature.zero_crossing_rate(audio, frame_length=frame, hop_length=cfg.hop_length, center=True)[0]
    n = min(len(f0), len(rms), len(zcr))
    f0, rms, zcr = f0[:n], rms[:n], zcr[:n]
    loud = rms > (rms.max() * 10 ** (-30 / 20) if rms.size else 0)
    voiced = loud & (zcr < 0.25) & (f0 > cfg.f0_min * 1.05) & (f0 < cfg.f0_max * 0.95)
    out = np.where(voiced, f0, 0.0).astype(np.float32)
    n_frames = 1 + len(audio) // cfg.hop_length
    if len(out) < n_frames:
        out = np.pad(out, (0, n_frames - len(out)))
    return out[:n_frames]


def extract_features(audio: np.ndarray, cfg: AudioConfig, mel_module: MelSpectrogram | None = None) -> dict[str, np.ndarray]:
    """All training features of one utterance on one frame grid (one STFT for mel and energy).

    Pass a ``mel_module`` built once per worker to avoid rebuilding the filterbank per utterance.
    """
    mel_module = mel_module or MelSpectrogram(cfg)
    with torch.no_grad():
        mag = mel_module.magnitude(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None])[0]
        mel = torch.log(torch.clamp(mel_module.fb @ mag, min=LOG_FLOOR)).numpy()
        energy = torch.linalg.vector_norm(mag, dim=0).numpy()
    n = mel.shape[1]
    f0 = f0_yin(audio, cfg)[:n]
    if len(f0) < n:
        f0 = np.pad(f0, (0, n - len(f0)))
    return {"mel": mel.astype(np.float32), "energy": energy[:n].astype(np.float32), "f0": f0.astype(np.float32)}
