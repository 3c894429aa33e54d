""""Is my data enough?": a dataset's minutes of audio against the measured fine-tuning curve.

The curve ships with the base voice (``voicetrain/pretrained/base/finetune_curve.json``, written by
recipes/ship_base.py from `bench/finetune.py` lines): for each measured amount of audio, what
fine-tuning the shipped base and training from scratch reached on held-out sentences of a voice
the base never heard, relative to that voice's real recordings. Pure functions plus one file read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CURVE = Path(__file__).resolve().parent.parent / "pretrained" / "base" / "finetune_curve.json"


@dataclass(frozen=True)
class CurvePoint:
    run: str
    """'full' (fine-tuning the shipped base) or 'scratch'."""
    audio_minutes: float
    train_minutes: float
    cer_ratio: float
    """Whisper CER of the synthesized held-out sentences over the real recordings'."""
    similarity_gap: float
    """Speaker similarity to the real voice minus the real recordings' own (negative: less like them)."""
    dnsmos_gap: float
    """DNSMOS minus the real recordings' DNSMOS."""


def load_curve(path: str | Path = CURVE) -> list[CurvePoint]:
    """The shipped curve, or [] when this install has none (or it cannot be read)."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
        return sorted((CurvePoint(**r) for r in rows), key=lambda p: (p.run, p.audio_minutes))
    except (OSError, ValueError, TypeError):
        return []


CURVE_SOURCE = ("voicetrain/pretrained/base/finetune_curve.json: bench/finetune.py fine-tuning the shipped base, and "
                "training from scratch on the same audio and minutes, to flite slt (a voice the base never heard), "
                "2 CPU cores; held-out Harvard sentences against slt's real recordings")
"""Where the curve's figures come from, for anything that quotes them."""


@dataclass(frozen=True)
class Reach:
    """What the curve says ``audio_minutes`` of audio reaches: its points at one measured amount."""

    audio_minutes: float
    measured_minutes: float | None
    """The measured amount quoted: the largest not above ``audio_minutes``, else the least measured."""
    finetune: CurvePoint | None
    scratch: CurvePoint | None
    below_measured: bool
    """Less audio than anything measured: the figures are an upper bound, not an expectation."""


def reach(audio_minutes: float, curve: list[CurvePoint]) -> Reach:
    """The fine-tune and from-scratch points at the measured amount of audio nearest below ``audio_minutes``
    (never one above it: more audio than you have is not what you will reach)."""
    amounts = sorted({p.audio_minutes for p in curve})
    if not amounts:
        return Reach(audio_minutes, None, None, None, False)
    below = [a for a in amounts if a <= audio_minutes]
    at = below[-1] if below else amounts[0]
    pick = lambda run: next((p for p in curve if p.run == run and p.audio_minutes == at), None)  # noqa: E731
    return Reach(audio_minutes, at, pick("full"), pick("scratch"), not below)


def finetune_line(p: CurvePoint) -> str:
    return (f"measured with {p.audio_minutes:g} min of audio, {p.train_minutes:g} min of 2-core training "
            f"from the shipped base: Whisper CER {p.cer_ratio:.2f}x the real recordings', speaker "
            f"similarity {p.similarity_gap:+.3f} and DNSMOS {p.dnsmos_gap:+.2f} against them")


def scratch_line(p: CurvePoint) -> str:
    return (f"training from scratch instead, same budget, {p.audio_minutes:g} min of audio: Whisper CER "
            f"{p.cer_ratio:.2f}x real, similarity {p.similarity_gap:+.3f}")


def advise(audio_minutes: float, curve: list[CurvePoint]) -> list[str]:
    """Lines telling what ``audio_minutes`` of audio reaches, from the nearest measured points."""
    lines = [f"{audio_minutes:.1f} minutes of audio kept."]
    if not curve:
        return lines + ["No measured curve ships with this install: see BENCHMARKS.md (fine-tuning)."]
    tuned = [p for p in curve if p.run == "full"]
    lines += [finetune_line(p) for p in tuned]
    lines += [scratch_line(p) for p in curve if p.run == "scratch"]
    least = min((p.audio_minutes for p in tuned), default=None)
    if least is not None and audio_minutes < least:
        lines.append(f"less audio than anything measured ({least:g} min): record more prompts before training, "
                     "or expect a voice less intelligible and less like yours than the figures above")
    elif tuned:
        lines.append("fine-tune from the shipped base: `voicetrain finetune DATASET --out RUN`")
    return lines
