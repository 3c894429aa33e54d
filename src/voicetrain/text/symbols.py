"""The symbol table: phoneme symbols <-> integer ids, saved with every dataset, run and bundle."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from voicetrain.fileio import atomic_write_json

PAD = "_"
PUNCTUATION = tuple(" !'(),-.:;?\"")


@dataclass(frozen=True)
class SymbolTable:
    """Ordered symbols; id 0 is padding. Built from a dataset's phonemes, then frozen."""

    symbols: tuple[str, ...]

    @classmethod
    def build(cls, phoneme_strings: list[str]) -> "SymbolTable":
        seen = {c for s in phoneme_strings for c in s}
        ordered = [PAD, *PUNCTUATION]
        ordered += sorted(seen - set(ordered))
        return cls(tuple(ordered))

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.symbols)}

    def encode(self, phonemes: str) -> tuple[list[int], list[str]]:
        """Return (ids, unknown symbols). Unknown symbols are dropped, never mapped silently."""
        idx = self.index
        ids, unknown = [], []
        for c in phonemes:
            if c in idx:
                ids.append(idx[c])
            else:
                unknown.append(c)
        return ids, unknown

    def decode(self, ids: list[int]) -> str:
        return "".join(self.symbols[i] for i in ids if 0 < i < len(self.symbols))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, {"symbols": list(self.symbols)}, indent=0)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SymbolTable":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(tuple(data["symbols"]))
