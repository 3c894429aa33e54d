"""Objective speech metrics as pure functions on waveforms, texts and embeddings.

Nothing here loads a model: the functions that need one (ASR, speaker encoder,
DNSMOS) take it as an argument, and :mod:`voicetrain.evaluation.models` holds the
loaded models (:class:`~voicetrain.evaluation.models.Evaluator`). That keeps the
maths testable without the models and makes "load once per process" explicit.

Units
-----
* WER / CER: fraction (0 = perfect, can exceed 1 with insertions).
* MCD: dB, from 25 mel-cepstral coefficients of which c0 (energy) is dropped,
  averaged over the DTW path: ``10/ln(10) * sqrt(2 * sum_d (c_d - c'_d)^2)``.
  The cepstra come from the natural log of the mel *amplitude* spectrum, the
  convention under which that constant turns cepstral distance into dB. They are
  mel-filterbank cepstra (log-mel + DCT), not SPTK ``mcep`` all-pass cepstra, so
  values are comparable between runs of voicetrain, not with numbers in papers.
* F0 RMSE: cents (1200 * log2 ratio) over frames voiced in both signals; Hz is
  reported beside it. Voicing decision error: fraction of aligned frame pairs whose
  voiced/unvoiced decision differs.
* Real-time factor: seconds of compute per second of audio (< 1 is faster than real time).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from voicetrain.audio.io import resample
from voicetrain.config import AudioConfig

# ----------------------------------------------------------------------------- text / intelligibility

_BRACKETED_RE = re.compile(r"<[^>]*>|\[[^\]]*\]|\(\d+\)")  # ASR fillers (<sil>, [NOISE]) and alt-pron marks (2)
_APOSTROPHE_RE = re.compile(r"['\u2019`]")
_NON_WORD_RE = re.compile(r"[^0-9a-z]+")


def normalize_for_scoring(text: str) -> str:
    """The one normalization applied to BOTH reference and hypothesis before WER/CER.

    Lower-case, numbers/abbreviations spelled out (``voicetrain.text.normalize``),
    apostrophes dropped ("it's" -> "its", so both spellings score alike), every other
    non-alphanumeric character turned into a space, spaces collapsed.
    """
    from voicetrain.text.normalize import normalize_text

    text = _BRACKETED_RE.sub(" ", text)
    text = normalize_text(text).lower()
    text = _APOSTROPHE_RE.sub("", text)
    return _NON_WORD_RE.sub(" ", text).strip()


@dataclass(frozen=True)
class ErrorRates:
    """Intelligibility of one hypothesis against one reference, after normalization."""

    wer: float
    cer: float
    reference: str
    """Normalized reference text."""
    hypothesis: str
    """Normalized hypothesis text."""


def error_rates(reference: str, hypothesis: str) -> ErrorRates:
    """WER and CER (jiwer) between two raw texts, both passed through :func:`normalize_for_scoring`.

    Raises ``ValueError`` when the reference is empty after normalization (the rates
    are undefined).
    """
    import jiwer

    ref, hyp = normalize_for_scoring(reference), normalize_for_scoring(hypothesis)
    if not ref:
        raise ValueError(f"reference text {reference!r} is empty after normalization")
    return ErrorRates(wer=float(jiwer.wer(ref, hyp)), cer=float(jiwer.cer(ref, hyp)), reference=ref, hypothesis=hyp)


def to_pcm16(audio: np.ndarray, sr: int, target_sr: int = 16000) -> bytes:
    """(samples,) float waveform -> mono 16-bit little-endian PCM bytes at ``target_sr`` (what pocketsphinx reads)."""
    x = resample(np.asarray(audio, dtype=np.float32), sr, target_sr)
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


# ----------------------------------------------------------------------------- speaker similarity


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two 1-D vectors (0 when either is all zeros)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def mean_embedding(embeddings: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """L2-normalized mean of utterance embeddings (n, dim) -> (dim,): a speaker's centroid."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] == 0:
        raise ValueError(f"expected a non-empty (n, dim) array of embeddings, got shape {e.shape}")
    m = e.mean(axis=0)
    n = np.linalg.norm(m)
    return (m / n if n > 0 else m).astype(np.float32)


@dataclass(frozen=True)
class SpeakerMatch:
    """How one utterance's embedding relates to a set of speaker centroids."""

    target: str
    target_similarity: float
    """Cosine similarity to the target speaker's centroid."""
    similarities: dict[str, float]
    """Cosine similarity to every speaker centroid, the target included."""
    nearest: str
    """The speaker whose centroid is most similar."""

    @property
    def mismatch(self) -> bool:
        """True when the utterance sounds more like another speaker than the target."""
        return self.nearest != self.target


def speaker_similarity(embedding: np.ndarray, centroids: Mapping[str, np.ndarray], target: str) -> SpeakerMatch:
    """Compare one utterance embedding (dim,) with speaker centroids {name: (dim,)}.

    To score an utterance against its own speaker fairly, build the target centroid
    without that utterance (otherwise it is partly compared with itself).
    """
    if target not in centroids:
        raise KeyError(f"target speaker {target!r} has no centroid; known: {sorted(centroids)}")
    sims = {name: cosine_similarity(embedding, c) for name, c in centroids.items()}
    nearest = max(sims, key=sims.__getitem__)
    return SpeakerMatch(target=target, target_similarity=sims[target], similarities=sims, nearest=nearest)


# ----------------------------------------------------------------------------- spectral / prosodic distance

MCD_N_COEFFS = 25
"""Mel-cepstral coefficients computed, c0 included; c0 is dropped from the distance."""
_MCD_K = 10.0 / math.log(10.0) * math.sqrt(2.0)


def mel_cepstrum(audio: np.ndarray, sr: int, cfg: AudioConfig = AudioConfig(), n_coeffs: int = MCD_N_COEFFS) -> np.ndarray:
    """(samples,) -> (n_coeffs, frames) mel-filterbank cepstrum on ``cfg``'s frame grid.

    The audio is resampled to ``cfg.sample_rate`` first so that files of different
    rates are compared on the same filterbank.
    """
    import librosa
    from scipy.fft import dct

    x = resample(np.asarray(audio, dtype=np.float32), sr, cfg.sample_rate)
    mel = librosa.feature.melspectrogram(y=x, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                                         win_length=cfg.win_length, n_mels=cfg.n_mels, fmin=cfg.f_min,
                                         fmax=cfg.f_max, power=1.0, center=True)
    # Natural log of amplitude (power=1): the convention behind MCD's 10/ln10 * sqrt(2) constant.
    log_amp = np.log(np.maximum(mel, 1e-5))
    # An orthonormal DCT over M bands gives a cosine of amplitude A in the log spectrum the
    # coefficient A*sqrt(M/2); the real cepstrum gives it A/2. Dividing by sqrt(2M) puts the
    # coefficients on the cepstral scale MCD's constant assumes (and makes MCD independent of n_mels).
    cep = dct(log_amp, type=2, norm="ortho", axis=0)[:n_coeffs] / math.sqrt(2.0 * cfg.n_mels)
    return cep.astype(np.float64)


def dtw_path(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Optimal monotonic alignment of feature sequences x (dim, N) and y (dim, M) -> (L, 2) index pairs, in order."""
    import librosa
    from scipy.spatial.distance import cdist

    cost = cdist(x.T, y.T, metric="euclidean")
    _, wp = librosa.sequence.dtw(C=cost, backtrack=True)
    return np.ascontiguousarray(wp[::-1])


def _trim(audio: np.ndarray, top_db: float) -> np.ndarray:
    import librosa

    trimmed, _ = librosa.effects.trim(audio, top_db=top_db)
    # An all-silent file trims to nothing; keep it whole so the frame grid is not empty.
    return trimmed if trimmed.size >= 2048 else audio


@dataclass(frozen=True)
class ReferenceDistance:
    """Distances between a test utterance and a reference recording of the same text."""

    mcd_db: float
    f0_rmse_cents: float
    """NaN when no aligned frame pair is voiced in both."""
    f0_rmse_hz: float
    voicing_error: float
    """Fraction of DTW-aligned frame pairs whose voiced/unvoiced decisions differ."""
    n_aligned_frames: int


def reference_distance(audio: np.ndarray, sr: int, reference: np.ndarray, ref_sr: int,
                       cfg: AudioConfig = AudioConfig(), trim_top_db: float | None = 40.0) -> ReferenceDistance:
    """MCD-DTW, F0 RMSE and voicing error of ``audio`` against ``reference`` (both (samples,) float).

    Leading/trailing silence is trimmed first (``trim_top_db``; None keeps it) since
    silence would otherwise dominate the average. One DTW path, found on the
    mel-cepstra without c0 (loudness-independent), aligns both MCD and F0 frames:
    F0 comes from :func:`voicetrain.audio.features.f0_yin` on the same frame grid.
    """
    from voicetrain.audio.features import f0_yin

    x = resample(np.asarray(audio, dtype=np.float32), sr, cfg.sample_rate)
    y = resample(np.asarray(reference, dtype=np.float32), ref_sr, cfg.sample_rate)
    if trim_top_db is not None:
        x, y = _trim(x, trim_top_db), _trim(y, trim_top_db)
    cx, cy = mel_cepstrum(x, cfg.sample_rate, cfg)[1:], mel_cepstrum(y, cfg.sample_rate, cfg)[1:]
    path = dtw_path(cx, cy)
    diff = cx[:, path[:, 0]] - cy[:, path[:, 1]]
    mcd = float(np.mean(_MCD_K * np.sqrt(np.sum(diff**2, axis=0))))

    fx, fy = f0_yin(x, cfg), f0_yin(y, cfg)
    # f0_yin and the mel-cepstrum share the centred frame grid (1 + n // hop); clamp for safety.
    ix = np.minimum(path[:, 0], len(fx) - 1)
    iy = np.minimum(path[:, 1], len(fy) - 1)
    px, py = fx[ix], fy[iy]
    vx, vy = px > 0, py > 0
    both = vx & vy
    if both.any():
        cents = 1200.0 * np.log2(px[both] / py[both])
        f0_cents = float(np.sqrt(np.mean(cents**2)))
        f0_hz = float(np.sqrt(np.mean((px[both] - py[both]) ** 2)))
    else:
        f0_cents = f0_hz = float("nan")
    return ReferenceDistance(mcd_db=mcd, f0_rmse_cents=f0_cents, f0_rmse_hz=f0_hz,
                             voicing_error=float(np.mean(vx != vy)), n_aligned_frames=int(len(path)))


def mcd_dtw(audio: np.ndarray, sr: int, reference: np.ndarray, ref_sr: int, cfg: AudioConfig = AudioConfig()) -> float:
    """Mel-cepstral distortion in dB after DTW (see :func:`reference_distance`)."""
    return reference_distance(audio, sr, reference, ref_sr, cfg).mcd_db


# ----------------------------------------------------------------------------- speed


def real_time_factor(compute_seconds: float, audio_seconds: float) -> float:
    """Seconds of compute per second of audio produced or processed (< 1: faster than real time)."""
    if audio_seconds <= 0:
        raise ValueError(f"audio duration must be positive, got {audio_seconds}")
    return compute_seconds / audio_seconds
