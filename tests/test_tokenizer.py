"""The text path: what prepare stored for an utterance is what synthesis makes of the same text, and
symbols a voice lacks are named, not dropped in silence."""

from __future__ import annotations

import warnings

import pytest

from voicetrain.text.symbols import SymbolTable
from voicetrain.text.tokenizer import Tokenizer, UnknownSymbolsWarning


def test_prepare_and_synthesis_tokenize_alike(prepared_demo_dataset):
    from voicetrain.data.manifest import PreparedDataset

    ds = PreparedDataset.open(prepared_demo_dataset)
    symbols = SymbolTable.load(ds.symbols_path)
    tok = Tokenizer(ds.info.text, symbols)
    utts = ds.manifest("train") + ds.manifest("val")
    assert utts
    for u in utts:
        ids, phonemes = tok(u.text)
        assert phonemes == u.phonemes, u.id
        assert ids == symbols.encode(u.phonemes)[0], u.id


def test_unknown_symbols_are_named(prepared_demo_dataset):
    from voicetrain.data.manifest import PreparedDataset

    ds = PreparedDataset.open(prepared_demo_dataset)
    full = SymbolTable.load(ds.symbols_path)
    tok = Tokenizer(ds.info.text, full)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a voice that knows every symbol says nothing
        _, phonemes = tok("The birch canoe slid on the smooth planks.")
    missing = next(c for c in phonemes if c.isalpha())
    lacking = Tokenizer(ds.info.text, SymbolTable(tuple(s for s in full.symbols if s != missing)))
    with pytest.warns(UnknownSymbolsWarning, match=repr(missing)):
        ids, _ = lacking("The birch canoe slid on the smooth planks.")
    assert len(ids) == len(phonemes) - phonemes.count(missing)
