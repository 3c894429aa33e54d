"""Corpus readers and format detection (no audio decoding needed: files are tiny placeholders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicetrain.data.formats import CorpusFormatError, decode_transcript, detect_format, read_corpus
from voicetrain.data.qc import Reason


def _wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(160, np.float32), 16000)


def test_ljspeech_reader(tmp_path):
    root = tmp_path / "lj"
    _wav(root / "wavs" / "LJ001.wav")
    _wav(root / "wavs" / "LJ002.flac")
    _wav(root / "wavs" / "extra.wav")
    (root / "metadata.csv").write_text("LJ001|Hello there.|Hello there.\nLJ002|Second one\nLJ003|No audio here.\n")
    c = read_corpus(root)
    assert c.format == "ljspeech"
    by = {it.id: it for it in c.items}
    assert by["LJ001"].text == "Hello there." and by["LJ002"].audio.suffix == ".flac"
    assert [i.code for i in by["LJ003"].issues] == [Reason.AUDIO_MISSING]
    assert any("not in metadata.csv" in w for w in c.warnings)
    assert {it.speaker for it in c.items} == {"lj"}


def test_vctk_speaker_folders_and_txt_wav48_layout(tmp_path):
    a = tmp_path / "a"
    _wav(a / "alice" / "001.wav")
    (a / "alice" / "001.txt").write_text("One.")
    _wav(a / "bob" / "001.ogg")
    c = read_corpus(a)
    assert c.format == "vctk"
    by = {it.id: it for it in c.items}
    assert set(by) == {"alice_001", "bob_001"}
    assert [i.code for i in by["bob_001"].issues] == [Reason.TRANSCRIPT_MISSING]

    b = tmp_path / "b"
    _wav(b / "wav48_silence_trimmed" / "p225" / "p225_001_mic1.flac")
    _wav(b / "wav48_silence_trimmed" / "p225" / "p225_001_mic2.flac")
    (b / "txt" / "p225").mkdir(parents=True)
    (b / "txt" / "p225" / "p225_001.txt").write_text("Please call Stella.")
    c = read_corpus(b, "auto")
    assert c.format == "vctk"
    assert [(it.id, it.speaker, it.audio.name, it.text) for it in c.items] == [
        ("p225_001", "p225", "p225_001_mic1.flac", "Please call Stella.")]


def test_pairs_and_errors_name_the_path(tmp_path):
    root = tmp_path / "pairs"
    _wav(root / "x.wav")
    (root / "x.txt").write_text("X marks the spot.")
    assert detect_format(root) == "pairs"
    with pytest.raises(CorpusFormatError, match="does not exist"):
        read_corpus(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorpusFormatError, match=str(empty)) as e:
        read_corpus(empty)
    assert "metadata.csv" in str(e.value) and "NAME.txt" in str(e.value)
    with pytest.raises(CorpusFormatError, match="unknown --format"):
        read_corpus(root, "libritts")


def test_transcript_decoding_policy():
    assert decode_transcript("naïve".encode("utf-8"), "t") == ("naïve", [])
    assert decode_transcript(b"\xef\xbb\xbfhi", "t") == ("hi", [])
    assert decode_transcript("hi".encode("utf-16"), "t") == ("hi", [])
    text, issues = decode_transcript("café".encode("cp1252"), "t")
    assert text == "café" and [i.code for i in issues] == [Reason.TRANSCRIPT_NOT_UTF8]
    assert not issues[0].is_error
    for junk in (b"\x81\x8d", b"h\x00i\x00"):
        text, issues = decode_transcript(junk, "t")
        assert text is None and [i.code for i in issues] == [Reason.TRANSCRIPT_UNDECODABLE]


def test_ljspeech_ids_cannot_reach_outside_wavs(tmp_path):
    root = tmp_path / "corpus" / "lj"
    _wav(root / "wavs" / "ok.wav")
    _wav(tmp_path / "outside" / "secret.wav")  # a real file the hostile ids point at
    (root / "metadata.csv").write_text(f"ok|Fine.\n../../../outside/secret|Leak.\n{tmp_path}/outside/secret|Leak.\n")
    c = read_corpus(root)
    assert len(c.items) == 3
    bad = [it for it in c.items if it.id != "ok"]
    for it in bad:
        assert it.audio is None, it.audio
        assert [i.code for i in it.issues] == [Reason.AUDIO_MISSING] and "points outside" in it.issues[0].message
    assert next(it for it in c.items if it.id == "ok").audio == root / "wavs" / "ok.wav"
