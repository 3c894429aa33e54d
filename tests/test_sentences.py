"""Sentence splitting: whole text and text that arrives in pieces give the same sentences."""

from __future__ import annotations

import random

import pytest

from voicetrain.text.sentences import split_sentences, take_sentences

PARAGRAPH = ("Mr. J. Smith met Dr. Who at 3.5 o'clock; they talked. Why? Nobody knows! "
             "The birch canoe slid on the smooth planks: glue the sheet to the dark blue background")


@pytest.mark.parametrize("text, expected", [
    ("Hello there. How are you?", ["Hello there.", "How are you?"]),
    ("One!Two. Three", ["One!Two.", "Three"]),  # no space after '!': not an end
    ("Dr. Smith and Mrs. Jones live on St. Mary's road.", ["Dr. Smith and Mrs. Jones live on St. Mary's road."]),
    ("J. R. R. Tolkien wrote it. Then he slept.", ["J. R. R. Tolkien wrote it.", "Then he slept."]),
    ("It cost 3.50 dollars. Cheap.", ["It cost 3.50 dollars.", "Cheap."]),
    ("Wait; then go: now!", ["Wait;", "then go:", "now!"]),
    ("  \n ", []),
    ("etc. Next one.", ["etc.", "Next one."]),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_long_runs_are_cut_at_commas_then_spaces():
    text = ", ".join(["word"] * 200)
    pieces = split_sentences(text, max_chars=100)
    assert all(len(p) <= 100 for p in pieces) and len(pieces) > 5
    assert all(p.endswith(",") for p in pieces[:-1])  # cut after a comma, not inside a word
    assert " ".join(pieces).replace(" ", "") == text.replace(" ", "")
    spaces = split_sentences(" ".join(["word"] * 100), max_chars=50)
    assert all(len(p) <= 50 for p in spaces) and all(p.split() == ["word"] * len(p.split()) for p in spaces)


def test_take_sentences_keeps_the_unfinished_rest():
    assert take_sentences("") == ([], "")
    assert take_sentences("Hello there") == ([], "Hello there")
    assert take_sentences("Hello there.") == ([], "Hello there.")  # "." could still become "3.5"
    assert take_sentences("It is 3.") == ([], "It is 3.")
    assert take_sentences("Hello there. How") == (["Hello there."], "How")
    assert take_sentences("Dr. ") == ([], "Dr. ")  # a title is not an end
    assert take_sentences("A. B? C! ") == (["A. B?", "C!"], "")


@pytest.mark.parametrize("seed", range(20))
def test_text_in_pieces_gives_the_same_sentences_as_the_whole(seed):
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(PARAGRAPH)), rng.randint(1, 30)))
    pieces = [PARAGRAPH[a:b] for a, b in zip([0, *cuts], [*cuts, len(PARAGRAPH)])]
    got, rest = [], ""
    for piece in pieces:
        done, rest = take_sentences(rest + piece)
        got.extend(done)
    got.extend(split_sentences(rest))
    assert got == split_sentences(PARAGRAPH)


def test_a_long_stream_without_ends_does_not_wait_forever():
    done, rest = take_sentences("word, " * 100, max_chars=60)
    assert done and all(len(d) <= 60 for d in done) and len(rest) <= 60
