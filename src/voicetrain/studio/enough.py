""""Is it enough?": minutes of usable speech, phoneme coverage, and what a run will reach at that amount.

Coverage counts the phoneme symbols (the ones the model's symbol table is made of: espeak-ng IPA, without
stress and length marks) of the good takes against those of the whole prompt list, and names prompts not
yet recorded that hold the missing ones. "What a run will reach" quotes the measured curve that ships with
the base voice (data/enough.py, the same figures `prepare` prints): fine-tuning the shipped base and
training from scratch, at the measured amount of audio nearest below the minutes recorded. They were
measured on another voice, so they say what to expect, not what this voice will score.
"""

from __future__ import annotations

import threading
import unicodedata
from dataclasses import asdict
from typing import Any

from voicetrain.data.enough import CURVE_SOURCE, CurvePoint, finetune_line, load_curve, reach, scratch_line
from voicetrain.studio.project import Project, Prompt
from voicetrain.text.symbols import PUNCTUATION

_MARKS = frozenset("ˈˌːˑ")

def phone_set(phonemes: str) -> set[str]:
    """The phoneme symbols of an IPA string: no punctuation, stress, length or combining marks (syllabic ̩)."""
    return {c for c in phonemes if c not in PUNCTUATION and c not in _MARKS and not c.isspace()
            and not unicodedata.combining(c)}


class Coverage:
    """Phonemizes the prompt list once (one batched espeak call) and answers per project state."""

    def __init__(self, language: str = "en-us"):
        self.language = language
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, ...], dict[str, set[str]]] = {}

    def _phones(self, prompts: list[Prompt]) -> dict[str, set[str]]:
        from voicetrain.text.normalize import normalize_text
        from voicetrain.text.phonemize import Phonemizer

        key = tuple(f"{p.id}\t{p.text}" for p in prompts)
        with self._lock:
            if key not in self._cache:
                out = Phonemizer(self.language)([normalize_text(p.text) for p in prompts])
                self._cache = {key: {p.id: phone_set(ph) for p, ph in zip(prompts, out)}}
            return self._cache[key]

    def report(self, project: Project) -> dict[str, Any]:
        prompts = project.prompts()
        phones = self._phones(prompts)
        inventory = set().union(*phones.values()) if phones else set()
        seconds, good, bad, pending = 0.0, [], 0, 0
        for t in project.takes():
            v = t["verdict"]
            if v is None:
                pending += 1
            elif v["status"] == "bad":
                bad += 1
            else:
                good.append(t["id"])
                seconds += float(v["measures"].get("speech_seconds") or 0.0)
        covered = set().union(*(phones.get(pid, set()) for pid in good)) if good else set()
        missing = sorted(inventory - covered)
        suggest = []
        if missing:  # greedy: the unrecorded prompts that add the most missing phonemes
            todo, recorded = set(missing), set(project.take_ids())
            for p in sorted(prompts, key=lambda p: -len(phones[p.id] & set(missing))):
                if p.id in recorded or not (phones[p.id] & todo):
                    continue
                suggest.append({"id": p.id, "text": p.text, "adds": sorted(phones[p.id] & todo)})
                todo -= phones[p.id]
                if not todo or len(suggest) >= 5:
                    break
        minutes = seconds / 60
        return {
            "minutes": round(minutes, 2), "good_takes": len(good), "bad_takes": bad, "unchecked_takes": pending,
            "prompts": len(prompts), "phonemes_covered": len(covered), "phonemes_total": len(inventory),
            "coverage": round(len(covered) / len(inventory), 3) if inventory else None,
            "missing_phonemes": missing, "suggested_prompts": suggest, **expected(minutes),
        }


def expected(minutes: float, curve: list[CurvePoint] | None = None) -> dict[str, Any]:
    """``advice`` and ``reach`` (the curve's fine-tune and from-scratch figures) for ``minutes`` of speech."""
    curve = load_curve() if curve is None else curve
    r = reach(minutes, curve)
    if r.measured_minutes is None:
        return {"advice": "no measured curve ships with this install: see BENCHMARKS.md (fine-tuning)",
                "reach": None}
    rows = [{**asdict(p), "run": run, "text": line(p)}
            for run, p, line in (("finetune", r.finetune, finetune_line), ("scratch", r.scratch, scratch_line)) if p]
    if r.below_measured:
        advice = (f"less audio than anything measured ({r.measured_minutes:g} min): record more prompts before "
                  "training, or expect a voice less intelligible and less like yours than the figures below")
    else:
        advice = (f"at least the {r.measured_minutes:g} minutes measured: fine-tune the shipped base (the Train "
                  "screen), which reached the figures below with that much audio of another voice")
    return {"advice": advice, "reach": {"source": CURVE_SOURCE, "minutes": round(minutes, 2),
                                        "measured_minutes": r.measured_minutes, "below_measured": r.below_measured,
                                        "rows": rows}}
