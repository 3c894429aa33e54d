"""Text -> symbol ids; the one code path used by data preparation, training and synthesis."""

from __future__ import annotations

from dataclasses import dataclass, field

from voicetrain.config import TextConfig
from voicetrain.text.normalize import normalize_text
from voicetrain.text.sentences import split_sentences  # noqa: F401  (re-exported: its old home)
from voicetrain.text.phonemize import Phonemizer
from voicetrain.text.symbols import PUNCTUATION, SymbolTable


class NoSpeakableTextError(ValueError):
    """The text has nothing to say after normalization (e.g. only punctuation or emoji)."""


class UnknownSymbolsWarning(UserWarning):
    """Phonemes of the text that the voice's symbol table lacks: they are skipped, and this says which."""


@dataclass
class Tokenizer:
    text_cfg: TextConfig
    symbols: SymbolTable | None = None
    _phonemizer: Phonemizer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._phonemizer = Phonemizer(self.text_cfg.language, self.text_cfg.phonemizer)

    def normalize(self, text: str) -> str:
        return normalize_text(text)

    def phonemize(self, normalized: list[str]) -> list[str]:
        return self._phonemizer(normalized)

    def encode_phonemes(self, phonemes: str) -> list[int]:
        """Phoneme string -> ids. Symbols the table lacks are skipped with an :class:`UnknownSymbolsWarning`
        naming them: a voice cannot say a sound it never heard, and silence about it hides a mispronunciation."""
        if self.symbols is None:
            raise ValueError("Tokenizer has no symbol table")
        ids, unknown = self.symbols.encode(phonemes)
        if unknown:
            import warnings

            names = ", ".join(repr(u) for u in dict.fromkeys(unknown))
            warnings.warn(UnknownSymbolsWarning(
                f"phoneme(s) {names} in {phonemes[:60]!r} are not in this voice's symbol table (its training data "
                "never had them) and were skipped; fine-tune on recordings that contain them to fix the "
                "pronunciation"), stacklevel=2)
        return ids

    def __call__(self, text: str) -> tuple[list[int], str]:
        """Text -> (ids, phoneme string). Raises NoSpeakableTextError when nothing is speakable."""
        phonemes = self.phonemize([self.normalize(text)])[0]
        ids = self.encode_phonemes(phonemes)
        speakable = [i for i in ids if self.symbols.symbols[i] not in PUNCTUATION]
        if not speakable:
            raise NoSpeakableTextError(
                f"text {text[:60]!r} has no speakable content after normalization and phonemization"
            )
        return ids, phonemes
