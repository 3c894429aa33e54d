"""Text front end shared by training and synthesis: normalize -> phonemize -> symbol ids."""

from voicetrain.text.normalize import normalize_text
from voicetrain.text.symbols import SymbolTable
from voicetrain.text.tokenizer import Tokenizer

__all__ = ["normalize_text", "SymbolTable", "Tokenizer"]
