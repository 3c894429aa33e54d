"""Sentence splitting for synthesis, whole-text and incremental (pure functions).

Synthesis goes sentence by sentence: short inputs keep the acoustic model on the lengths it
was trained on, and a server can send a sentence's audio while the next one is being made.
``split_sentences`` splits a whole text; ``take_sentences`` takes the finished sentences off
the front of text that is still arriving (Wyoming's synthesize-chunk, an LLM's tokens) and
keeps the rest until more text, or the end, tells where it stops.
"""

from __future__ import annotations

import re

MAX_SENTENCE_CHARS = 300
"""A longer run without a sentence end is cut at a comma, else a space (phonemizer and model stay bounded)."""

# a boundary: sentence punctuation, then whitespace
_BOUNDARY_RE = re.compile(r"[.!?;:]\s+")
# titles that come before a name: "Dr. Smith" is one sentence (text.normalize expands them afterwards).
# "etc.", "Jr.", "Co.", "Ltd." are left out: they often end a sentence.
_TITLES = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "mt", "capt", "col", "gen", "lt", "sgt", "vs", "no"})
_WORD_BEFORE_RE = re.compile(r"(\w+)\.$")


def _is_boundary(text: str, m: re.Match) -> bool:
    """Whether the punctuation matched by ``m`` ends a sentence (not a title or an initial like 'J.')."""
    if text[m.start()] != ".":
        return True
    word = _WORD_BEFORE_RE.search(text, 0, m.start() + 1)
    if word is None:
        return True
    w = word.group(1)
    if w.lower() in _TITLES:
        return False
    return not (len(w) == 1 and w.isupper())  # an initial: "J. R. Smith"


def _boundaries(text: str) -> list[int]:
    """Offsets just after each sentence end's punctuation (the whitespace that follows is not included)."""
    return [m.start() + 1 for m in _BOUNDARY_RE.finditer(text) if _is_boundary(text, m)]


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    out: list[str] = []
    while len(sentence) > max_chars:
        cut = sentence.rfind(",", 0, max_chars)
        if cut < max_chars // 3:
            cut = sentence.rfind(" ", 0, max_chars)
        if cut <= 0:
            cut = max_chars
        out.append(sentence[: cut + 1].strip())
        sentence = sentence[cut + 1:].strip()
    if sentence:
        out.append(sentence)
    return out


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Split text at sentence ends (. ! ? ; : then whitespace), then at commas/spaces so no piece
    exceeds ``max_chars``. Titles ("Dr. Smith") and initials ("J. Smith") do not end a sentence.

    >>> split_sentences("Hello there. Dr. Smith is in!  Bye")
    ['Hello there.', 'Dr. Smith is in!', 'Bye']
    """
    text = text.strip()
    out: list[str] = []
    start = 0
    for end in [*_boundaries(text), len(text)]:
        out.extend(_cut_long(text[start:end].strip(), max_chars))
        start = end
    return out


def take_sentences(buffer: str, max_chars: int = MAX_SENTENCE_CHARS) -> tuple[list[str], str]:
    """Finished sentences at the front of text still arriving, and the rest to keep.

    A sentence is finished once whitespace follows its end (the next piece of text could still
    turn "3." into "3.5"); a run longer than ``max_chars`` without an end is cut as in
    :func:`split_sentences`. Feed ``rest + next_piece`` back in; at the end of the text,
    ``split_sentences(rest)`` gives what remains.

    >>> take_sentences("One. Two")
    (['One.'], 'Two')
    >>> take_sentences("One. Two. ")
    (['One.', 'Two.'], '')
    """
    ends = _boundaries(buffer)
    head, rest = (buffer[: ends[-1]], buffer[ends[-1]:]) if ends else ("", buffer)
    done = split_sentences(head) if head.strip() else []
    if len(rest.strip()) > max_chars:
        pieces = _cut_long(rest.strip(), max_chars)
        done.extend(pieces[:-1])
        rest = pieces[-1]
    return done, rest.lstrip()
