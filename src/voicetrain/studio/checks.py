"""Each take's verdict, at once: the checks `prepare` runs (one function, data.prepare.assess_audio) plus
whether Whisper hears the prompt in it, and where the speech starts and ends.

A verdict is ``{"status": "good" | "warn" | "bad", "issues": [{code, severity, message}], "measures": {...}}``;
``bad`` takes are left out of training (prepare would quarantine the QC ones anyway; a take that does not
say its prompt is what prepare cannot see).
"""

from __future__ import annotations

import io
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voicetrain.config import AudioConfig, QCConfig

MISMATCH_CER = 0.6
"""Whisper's character error rate against the prompt above which the take does not say its prompt. Measured
here on 24 ARCTIC prompts spoken by espeak-ng (en-us), Whisper tiny.en greedy: against their own prompt 22 of
24 scored 0.00-0.52 (median 0.11; proper names cost most), two 0.91 and 1.0 (a robotic voice misheard);
against the next prompt's text every one scored 0.66 or more. A human reader is heard better than espeak."""
LEAD_SILENCE_S = 1.5
TRAIL_SILENCE_S = 2.0
CUT_OFF_S = 0.02
"""Speech (plus trimming's 50 ms pad) running to within this of the end: recording stopped too early."""
MAX_TAKE_SECONDS = 60.0


class TakeError(ValueError):
    """The upload is not a take at all (not audio, empty, far too long): the message says what."""


def decode_take(data: bytes) -> tuple[np.ndarray, int]:
    """WAV/FLAC/OGG bytes -> ((channels, samples) float32, rate); a TakeError names what is wrong."""
    import soundfile as sf

    if not data:
        raise TakeError("the take is empty (0 bytes): record again")
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - any decoder complaint means: not audio we can read
        raise TakeError(f"the take is not a readable audio file ({str(e).strip() or type(e).__name__}): "
                        "send a WAV (16-bit PCM), FLAC or OGG file") from None
    if info.duration > MAX_TAKE_SECONDS:
        raise TakeError(f"the take is {info.duration:.0f} s long; one prompt is a few seconds (limit "
                        f"{MAX_TAKE_SECONDS:.0f} s)")
    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001
        raise TakeError(f"the take's audio cannot be decoded ({e}): the file is truncated or corrupt") from None
    if audio.size == 0:
        raise TakeError("the take holds no samples: record again")
    return audio.T.copy(), int(sr)


@dataclass
class TakeChecker:
    """Judges takes; Whisper tiny.en (the evaluation's judge) is loaded on the first take that needs it."""

    audio_cfg: AudioConfig = field(default_factory=AudioConfig)
    qc_cfg: QCConfig = field(default_factory=QCConfig)
    whisper: bool = True
    """False: skip the prompt match (no eval extra installed, or tests of the QC alone)."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # one take at a time: Whisper's model is not shared across threads
        self._asr = None
        self.asr_note = ""

    def _whisper(self):
        if self._asr is None and self.whisper:
            from voicetrain.evaluation.models import ASRUnavailableError, WhisperASR

            try:
                # greedy and one thread: a take is judged while the next one is being recorded
                self._asr = WhisperASR(threads=1, beam_size=1)
            except ASRUnavailableError as e:
                self.whisper, self.asr_note = False, str(e)
        return self._asr

    def check(self, data: bytes, prompt: str, where: str) -> dict[str, Any]:
        """The verdict of one take (see the module docstring); raises TakeError for what is not audio."""
        from voicetrain.data.prepare import assess_audio
        from voicetrain.data.qc import clip_fraction, rms_dbfs

        audio, sr = decode_take(data)
        t0 = time.perf_counter()
        with self._lock:
            a = assess_audio(audio, sr, self.audio_cfg, self.qc_cfg, where)
            issues = [i.to_dict() for i in a.issues]
            measures: dict[str, Any] = {
                "seconds": _round(audio.shape[1] / sr, 2), "sample_rate": sr,
                "peak": _round(np.max(np.abs(audio)), 4), "rms_dbfs": _round(rms_dbfs(audio), 1),
                "clipped_fraction": _round(clip_fraction(audio), 5)}
            if a.trimmed is not None:
                measures.update(speech_seconds=_round(a.duration, 2), snr_db=_round(a.snr_db, 1),
                                lead_silence_s=_round(a.lead_seconds, 2), trail_silence_s=_round(a.trail_seconds, 2))
                issues += _edge_issues(a.lead_seconds, a.trail_seconds, where)
                asr = self._whisper() if a.duration > 0 else None
                if asr is not None:
                    from voicetrain.evaluation.metrics import error_rates

                    # the take as recorded, not the trimmed audio: trimming keeps 50 ms before the first word,
                    # and Whisper misheard the onset of such tight cuts ("My brother" -> "Might run the")
                    heard = asr.transcribe(audio.mean(axis=0), sr, max_new_tokens=120)
                    try:
                        cer = error_rates(prompt, heard).cer
                    except ValueError:  # a prompt of punctuation only: nothing to compare
                        cer = None
                    measures.update(heard=heard, prompt_cer=None if cer is None else round(cer, 3))
                    if cer is not None and cer > MISMATCH_CER:
                        issues.append({"code": "prompt_mismatch", "severity": "error", "message": (
                            f"{where}: Whisper heard {heard!r}, which does not match the prompt (character error "
                            f"rate {cer:.0%}, limit {MISMATCH_CER:.0%}); read the prompt as written and re-record")})
        if self.asr_note:
            measures["asr_note"] = self.asr_note
        measures["check_seconds"] = round(time.perf_counter() - t0, 2)
        status = ("bad" if any(i["severity"] == "error" for i in issues)
                  else "warn" if issues else "good")
        return {"status": status, "issues": issues, "measures": measures, "prompt": prompt}


def _round(x: float, nd: int) -> float | None:
    """JSON-safe: digital silence measures -inf dBFS, which JSON cannot hold."""
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


def _edge_issues(lead: float, trail: float, where: str) -> list[dict[str, str]]:
    """Warnings about the silence around the speech: kept (prepare trims it), but worth a better take."""
    out = []
    if trail < CUT_OFF_S:
        out.append({"code": "cut_off", "severity": "warning", "message": (
            f"{where}: the speech runs to the very end of the take: it may be cut off; stop recording a moment "
            "after you finish")})
    if lead > LEAD_SILENCE_S:
        out.append({"code": "leading_silence", "severity": "warning", "message": (
            f"{where}: {lead:.1f} s of silence before the speech (trimmed); start speaking sooner")})
    if trail > TRAIL_SILENCE_S:
        out.append({"code": "trailing_silence", "severity": "warning", "message": (
            f"{where}: {trail:.1f} s of silence after the speech (trimmed); stop recording sooner")})
    return out
