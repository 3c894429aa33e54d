"""English text normalization to spoken words (numbers, ordinals, years, currency, abbreviations)."""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words as _num2words


def num2words(n, **kw) -> str:
    # num2words writes "one thousand, two hundred": the comma would become a pause.
    return _num2words(n, **kw).replace(",", "").replace("-", " ")

_ABBREVIATIONS = {
    "mr": "mister", "mrs": "missus", "ms": "miz", "dr": "doctor", "st": "saint", "jr": "junior",
    "sr": "senior", "co": "company", "ltd": "limited", "lt": "lieutenant", "gen": "general",
    "col": "colonel", "capt": "captain", "prof": "professor", "vs": "versus", "etc": "et cetera",
    "no": "number", "approx": "approximately", "dept": "department", "sgt": "sergeant", "mt": "mount",
}
# "No." only means "number" before a digit; the others are safe before any word.
_ABBR_RE = re.compile(r"\b(" + "|".join(k for k in _ABBREVIATIONS if k != "no") + r")\.", re.IGNORECASE)
_NO_RE = re.compile(r"\bno\.\s*(?=\d)", re.IGNORECASE)
_CURRENCY_RE = re.compile(r"([$£€])\s?(\d[\d,]*)(?:\.(\d{1,2}))?\b")
_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_YEAR_RE = re.compile(r"\b(1[1-9]\d\d|20\d\d)\b")
_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_DECIMAL_RE = re.compile(r"\b(\d+)\.(\d+)\b")
_NUMBER_RE = re.compile(r"\b\d[\d,]*\b")
_SPACE_RE = re.compile(r"\s+")
_CURRENCY_NAMES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
                   "€": ("euro", "euros", "cent", "cents")}


def _currency(m: re.Match) -> str:
    unit1, unitn, sub1, subn = _CURRENCY_NAMES[m.group(1)]
    whole = int(m.group(2).replace(",", ""))
    cents = int((m.group(3) or "0").ljust(2, "0"))
    parts = [f"{num2words(whole)} {unit1 if whole == 1 else unitn}"]
    if cents:
        parts.append(f"{num2words(cents)} {sub1 if cents == 1 else subn}")
    return " and ".join(parts)


def _number(m: re.Match) -> str:
    raw = m.group(0).replace(",", "")
    return num2words(int(raw)) if raw else m.group(0)


def normalize_text(text: str) -> str:
    """Expand numbers, ordinals, years, currency and abbreviations to words; tidy whitespace.

    Punctuation is kept (the phonemizer uses it for phrasing); case is kept for espeak.
    """
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = _NO_RE.sub("number ", text)
    text = _ABBR_RE.sub(lambda m: _ABBREVIATIONS[m.group(1).lower()], text)
    text = _CURRENCY_RE.sub(_currency, text)
    text = _PERCENT_RE.sub(lambda m: f"{m.group(1)} percent", text)
    text = _ORDINAL_RE.sub(lambda m: num2words(int(m.group(1)), to="ordinal"), text)
    text = _YEAR_RE.sub(lambda m: num2words(int(m.group(1)), to="year"), text)
    text = _DECIMAL_RE.sub(lambda m: f"{num2words(int(m.group(1)))} point {' '.join(num2words(int(d)) for d in m.group(2))}", text)
    text = _NUMBER_RE.sub(_number, text)
    text = text.replace("&", " and ").replace("-", " ")
    return _SPACE_RE.sub(" ", text).strip()
