"""Grapheme-to-phoneme conversion with espeak-ng through phonemizer (IPA, stress, punctuation)."""

from __future__ import annotations

import re

_SPACE_RE = re.compile(r"\s+")


class PhonemizerError(RuntimeError):
    pass


class Phonemizer:
    """Converts normalized text to a phoneme string. One espeak backend per instance (no globals).

    ``kind='chars'`` maps text to lower-case letters: a language-agnostic fallback for
    machines without espeak-ng, and for tests that must not depend on it.
    """

    def __init__(self, language: str = "en-us", kind: str = "espeak"):
        self.language = language
        self.kind = kind
        self._backend = None
        if kind not in ("espeak", "chars"):
            raise PhonemizerError(f"unknown phonemizer {kind!r}; use 'espeak' or 'chars'")

    def _espeak(self):
        if self._backend is None:
            try:
                import logging

                from phonemizer.backend import EspeakBackend
                # phonemizer warns "words count mismatch" whenever punctuation splits words
                # differently; the output is still right, so keep only its errors.
                quiet = logging.getLogger("voicetrain.phonemizer")
                quiet.setLevel(logging.ERROR)
                self._backend = EspeakBackend(self.language, preserve_punctuation=True, with_stress=True,
                                              language_switch="remove-flags", logger=quiet)
            except RuntimeError as e:
                raise PhonemizerError(
                    f"espeak-ng is not usable for language {self.language!r} ({e}); "
                    "install it with `apt-get install espeak-ng` or pick another --language"
                ) from None
        return self._backend

    def __call__(self, texts: list[str]) -> list[str]:
        if self.kind == "chars":
            return [_SPACE_RE.sub(" ", t.lower()).strip() for t in texts]
        out = self._espeak().phonemize(texts, strip=True, njobs=1)
        return [_SPACE_RE.sub(" ", p).strip() for p in out]
