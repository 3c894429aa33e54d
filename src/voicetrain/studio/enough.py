""""Is it enough?": minutes of usable speech, phoneme coverage, and what was measured at similar amounts.

Coverage counts the phoneme symbols (the ones the model's symbol table is made of: espeak-ng IPA, without
stress and length marks) of the good takes against those of the whole prompt list, and names prompts not
yet recorded that hold the missing ones. The "what to expect" rows are measurements from BENCHMARKS.md,
quoted with their conditions, not a prediction for this voice: no curve of quality against minutes of
audio has been measured yet.
"""

from __future__ import annotations

import threading
import unicodedata
from typing import Any

from voicetrain.studio.project import Project, Prompt
from voicetrain.text.symbols import PUNCTUATION

_MARKS = frozenset("ˈˌːˑ")

MEASURED: list[dict[str, Any]] = [
    {"mode": "finetune", "audio_minutes": 2.5, "training_minutes": 3,
     "what": "fine-tune (all weights) of a 9-voice base to flite slt, 149 s of training audio, 3 minutes on 2 "
             "CPU cores", "result": "CER 0.314 (real recordings 0.189), speaker similarity 0.798 "
             "(real 0.883); freeze-encoder close behind", "source": "BENCHMARKS.md, Fine-tuning vs training from scratch"},
    {"mode": "scratch", "audio_minutes": 2.5, "training_minutes": 3,
     "what": "from scratch on the same 149 s of slt, same 3 minutes", "result": "CER 0.388, similarity 0.739: "
             "fine-tuning beat it on every figure", "source": "BENCHMARKS.md, Fine-tuning vs training from scratch"},
    {"mode": "scratch", "audio_minutes": None, "training_minutes": 15,
     "what": "from scratch on 270 ARCTIC prompts of flite rms (the demo voice), 15 minutes on 2 CPU cores",
     "result": "held-out CER 1.26x the real recordings' (1.78x after 5 minutes)",
     "source": "BENCHMARKS.md, Training from scratch on the demo voice"},
]


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
            "missing_phonemes": missing, "suggested_prompts": suggest, "advice": advice(minutes),
            "measured": MEASURED,
        }


def advice(minutes: float) -> str:
    if minutes < 1:
        return ("under a minute of speech: enough to try the pipeline, not for a voice. Fine-tuning measured "
                "well from 2.5 minutes.")
    if minutes < 5:
        return ("enough to fine-tune (measured at 2.5 minutes: the voice was recognisably the speaker's), "
                "not to train from scratch well.")
    if minutes < 15:
        return "a good amount to fine-tune; from scratch works but stays less intelligible than a fine-tune."
    return "enough for either; training from scratch was measured on 270 ARCTIC prompts of one voice."

