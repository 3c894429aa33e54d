"""Per-utterance quality checks: named reason codes, measurements and dataset-level checks.

Every check returns :class:`Issue` values with a reason code and a message that
names the file and the fix. Errors quarantine the utterance; warnings keep it
and are listed in the report. Thresholds live in :class:`voicetrain.config.QCConfig`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from enum import Enum

import numpy as np

from voicetrain.config import QCConfig
from voicetrain.text.symbols import PUNCTUATION


class Reason(str, Enum):
    # audio
    AUDIO_MISSING = "audio_missing"
    UNREADABLE = "unreadable"
    ZERO_LENGTH = "zero_length"
    SILENCE_ONLY = "silence_only"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    CLIPPING = "clipping"
    LOW_SNR = "low_snr"
    LOW_SAMPLE_RATE = "low_sample_rate"
    SAMPLE_RATE_TOO_LOW = "sample_rate_too_low"
    NON_FINITE = "non_finite_samples"
    DC_OFFSET = "dc_offset"
    # text
    TRANSCRIPT_MISSING = "transcript_missing"
    TRANSCRIPT_EMPTY = "transcript_empty"
    TRANSCRIPT_UNDECODABLE = "transcript_undecodable"
    TRANSCRIPT_NOT_UTF8 = "transcript_not_utf8"
    NO_PHONEMES = "no_phonemes"
    # dataset level
    RATE_OUTLIER = "rate_outlier"
    DUPLICATE_AUDIO = "duplicate_audio"

    @property
    def severity(self) -> str:
        return "warning" if self in _WARNINGS else "error"


# Kept with a warning: the audio is usable (an 8 kHz file only lacks high frequencies;
# a cp1252 transcript decodes to the right words in practice).
_WARNINGS = frozenset({Reason.LOW_SAMPLE_RATE, Reason.TRANSCRIPT_NOT_UTF8, Reason.DC_OFFSET})

MIN_SOURCE_RATE = 8000
"""Below 8 kHz (telephone band) speech loses the consonants that tell words apart: quarantined."""
DC_OFFSET_LIMIT = 0.01
"""|mean sample| above this is reported (the offset is removed before any other check)."""

CLIP_LEVEL = 0.999
"""|sample| at or above this counts as full scale (int16 full scale reads as 0.99997)."""
SNR_CAP_DB = 99.0
_STRESS_AND_LENGTH = frozenset("ˈˌːˑ")


@dataclass(frozen=True)
class Issue:
    code: Reason
    message: str

    @property
    def severity(self) -> str:
        return self.code.severity

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "severity": self.severity, "message": self.message}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> "Issue":
        return cls(Reason(d["code"]), d["message"])


def clip_fraction(audio: np.ndarray) -> float:
    """Fraction of samples (all channels) at full scale."""
    return float(np.mean(np.abs(audio) >= CLIP_LEVEL)) if audio.size else 0.0


def rms_dbfs(audio: np.ndarray) -> float:
    if audio.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def estimate_snr_db(audio: np.ndarray, sr: int, frame_seconds: float = 0.02) -> float:
    """Blind SNR estimate from the spread of 20 ms frame powers.

    The quietest 10% of frames estimate the noise floor (recordings have pauses
    and lead-in); the loudest 10% estimate speech plus noise. Digital silence
    gives a capped high value. Run it on the untrimmed audio so the pauses exist.
    """
    n = max(1, int(frame_seconds * sr))
    frames = len(audio) // n
    if frames < 5:
        return SNR_CAP_DB
    power = np.mean(np.square(audio[: frames * n].reshape(frames, n), dtype=np.float64), axis=1)
    noise = float(np.percentile(power, 10))
    loud = float(np.percentile(power, 90))
    speech = loud - noise
    if speech <= 0:
        return 0.0
    if noise <= 1e-12:
        return SNR_CAP_DB
    return float(min(SNR_CAP_DB, 10.0 * np.log10(speech / noise)))


def remove_dc(audio: np.ndarray) -> np.ndarray:
    """(channels, samples) minus each channel's mean: a constant offset is neither speech nor noise."""
    return audio - np.mean(audio, axis=-1, keepdims=True) if audio.size else audio


def check_source(audio: np.ndarray, sr: int, target_sr: int, cfg: QCConfig, where: str) -> list[Issue]:
    """Checks on the decoded source, (channels, samples), before any processing.

    Returns early after a fatal finding: a silent file has no meaningful clipping or SNR;
    NaN/Inf samples would otherwise read as "silence only" or "too short". Silence and
    clipping are judged after removing a DC offset.
    """
    if audio.size == 0:
        return [Issue(Reason.ZERO_LENGTH, f"{where}: the audio holds no samples; re-export the recording")]
    if not np.all(np.isfinite(audio)):
        bad = int(np.count_nonzero(~np.isfinite(audio)))
        return [Issue(Reason.NON_FINITE, f"{where}: {bad} sample(s) are NaN or infinite (a broken float export); "
                                         "re-export the recording as 16- or 24-bit PCM")]
    if sr < MIN_SOURCE_RATE:
        return [Issue(Reason.SAMPLE_RATE_TOO_LOW, f"{where}: recorded at {sr} Hz, below {MIN_SOURCE_RATE} Hz: too "
                                                  f"little of the speech band to learn from; record at {target_sr} Hz")]
    issues = []
    offset = float(np.max(np.abs(np.mean(audio, axis=-1))))
    if offset > DC_OFFSET_LIMIT:
        issues.append(Issue(Reason.DC_OFFSET, f"{where}: DC offset {offset:.3f} (a faulty microphone or interface); "
                                              "kept, the offset is removed"))
        audio = audio - np.mean(audio, axis=-1, keepdims=True)
    if sr < target_sr:
        issues.append(Issue(Reason.LOW_SAMPLE_RATE,
                            f"{where}: recorded at {sr} Hz, below the target {target_sr} Hz; kept (upsampled), but it "
                            f"has no content above {sr // 2} Hz. Record at {target_sr} Hz or more if you can"))
    level = rms_dbfs(audio)
    if level < cfg.silence_dbfs:
        issues.append(Issue(Reason.SILENCE_ONLY,
                            f"{where}: silence only (RMS {level:.1f} dBFS < {cfg.silence_dbfs} dBFS); "
                            "check the microphone input and re-record"))
        return issues
    frac = clip_fraction(audio)
    if frac > cfg.clip_fraction:
        issues.append(Issue(Reason.CLIPPING,
                            f"{where}: {frac:.2%} of samples are at full scale (limit {cfg.clip_fraction:.2%}): the "
                            "recording is clipped; re-record with lower input gain"))
    return issues


def check_trimmed(duration: float, snr_db: float, cfg: QCConfig, where: str) -> list[Issue]:
    """Checks on the trimmed mono audio's duration and the untrimmed audio's SNR."""
    issues = []
    if duration < cfg.min_seconds:
        issues.append(Issue(Reason.TOO_SHORT,
                            f"{where}: {duration:.2f} s of speech after trimming silence, under {cfg.min_seconds} s; "
                            "record a longer sentence"))
    if duration > cfg.max_seconds:
        issues.append(Issue(Reason.TOO_LONG,
                            f"{where}: {duration:.1f} s after trimming, over {cfg.max_seconds} s (--max-seconds); "
                            "split it into sentences or raise --max-seconds"))
    if snr_db < cfg.min_snr_db:
        issues.append(Issue(Reason.LOW_SNR,
                            f"{where}: estimated SNR {snr_db:.1f} dB, under {cfg.min_snr_db} dB; record in a quieter "
                            "room or closer to the microphone"))
    return issues


def count_phones(phonemes: str) -> int:
    """Phoneme symbols in an IPA string, not counting spaces, punctuation, stress or length marks."""
    return sum(1 for c in phonemes if c not in PUNCTUATION and c not in _STRESS_AND_LENGTH and not c.isspace())


@dataclass(frozen=True)
class RateItem:
    id: str
    speaker: str
    phones: int
    duration: float
    where: str

    @property
    def rate(self) -> float:
        return self.phones / self.duration if self.duration > 0 else 0.0


MIN_ITEMS_FOR_RATE = 5
"""A speaker's median speaking rate means little below this many utterances."""


def rate_outliers(items: list[RateItem], factor: float) -> dict[str, Issue]:
    """Utterances whose phonemes/s is more than ``factor`` away from their speaker's median.

    A transcript swapped with another clip's, or a clip cut short, shows up here:
    the text says far more (or less) than the audio can hold.
    """
    by_spk: dict[str, list[RateItem]] = {}
    for it in items:
        by_spk.setdefault(it.speaker, []).append(it)
    out: dict[str, Issue] = {}
    for spk, group in by_spk.items():
        if len(group) < MIN_ITEMS_FOR_RATE:
            continue
        median = statistics.median(it.rate for it in group)
        if median <= 0:
            continue
        for it in group:
            if it.rate > median * factor or it.rate < median / factor:
                out[it.id] = Issue(Reason.RATE_OUTLIER,
                                   f"{it.where}: {it.rate:.1f} phonemes/s, far from speaker {spk}'s median "
                                   f"{median:.1f} (factor {factor}); the transcript probably does not match "
                                   "this audio (swapped or truncated): fix the transcript")
    return out


def duplicates(items: list[tuple[str, str, str]]) -> dict[str, Issue]:
    """``items``: (id, audio_hash, where) in a stable order; every later copy of the same audio is flagged."""
    first: dict[str, tuple[str, str]] = {}
    out: dict[str, Issue] = {}
    for uid, h, where in items:
        if h in first:
            out[uid] = Issue(Reason.DUPLICATE_AUDIO,
                             f"{where}: same audio as {first[h][0]} ({first[h][1]}); delete one of the copies")
        else:
            first[h] = (uid, where)
    return out
