"""prepare on a deliberately messy folder: every bad item quarantined with its own reason, good ones kept."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from voicetrain.data.manifest import PreparedDataset
from voicetrain.data.prepare import PrepareConfig, prepare

GOOD_TEXTS = [
    "For the twentieth time that evening the two men shook hands.",
    "Will we ever forget it.",
    "God bless him, I hope I will go on seeing them forever.",
    "There was a change now.",
    "I had faith in them.",
    "He turned sharply, and faced Gregson across the table.",
    "Gray four thousand.",
    "And there was Ethel, looking at me with a happy smile.",
    "It was a curious coincidence.",
]
SHORT_TEXT = "Come here, Tom."
LONG_TEXT = ("The history of the world is the history of a few men who had faith in themselves, "
             "and who kept on walking long after the others had stopped.")

# id -> the one reason it must be quarantined for
EXPECTED_QUARANTINE = {
    "corrupt": "unreadable",
    "empty": "zero_length",
    "silence": "silence_only",
    "clipped": "clipping",
    "long": "too_long",
    "short": "too_short",
    "noisy": "low_snr",
    "swap_short": "rate_outlier",
    "swap_long": "rate_outlier",
    "no_text": "transcript_missing",
    "garbage_text": "transcript_undecodable",
    "blank_text": "transcript_empty",
    "zz_duplicate": "duplicate_audio",
    "nan_samples": "non_finite_samples",
    "inf_samples": "non_finite_samples",
    "rate_4k": "sample_rate_too_low",
    "header_1hz": "sample_rate_too_low",
    "header_hours": "too_long",
}
EXPECTED_KEPT = {"good_1", "good_2", "good_3", "good_4", "good_5", "good_flac", "good_mp3", "good_8k",
                 "good_stereo", "good_cp1252", "good_dc_offset"}
EXPECTED_WARNINGS = {"good_8k": "low_sample_rate", "good_cp1252": "transcript_not_utf8", "good_dc_offset": "dc_offset"}


def _flite(text: str, tmp: Path) -> np.ndarray:
    out = tmp / "flite_tmp.wav"
    subprocess.run(["flite", "-voice", "rms", "-t", text, "-o", str(out)], check=True, capture_output=True)
    audio, sr = sf.read(out, dtype="float32")
    assert sr == 16000
    return audio


def _write(folder: Path, name: str, audio: np.ndarray, text: str | bytes | None, sr: int = 16000,
           ext: str = "wav") -> None:
    sf.write(folder / f"{name}.{ext}", audio, sr)
    if isinstance(text, str):
        (folder / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
    elif isinstance(text, bytes):
        (folder / f"{name}.txt").write_bytes(text)


def make_messy_corpus(folder: Path, scratch: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    speech = [_flite(t, scratch) for t in GOOD_TEXTS]
    for i in range(5):
        _write(folder, f"good_{i + 1}", speech[i], GOOD_TEXTS[i])
    _write(folder, "good_flac", speech[5], GOOD_TEXTS[5], ext="flac")
    _write(folder, "good_8k", soxr.resample(speech[6], 16000, 8000), GOOD_TEXTS[6], sr=8000)
    _write(folder, "good_stereo", np.stack([speech[7], 0.5 * speech[7]], axis=1), GOOD_TEXTS[7])
    wav_for_mp3 = scratch / "for_mp3.wav"
    sf.write(wav_for_mp3, speech[8], 16000)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav_for_mp3), "-codec:a", "libmp3lame", "-q:a", "4",
                    str(folder / "good_mp3.mp3")], check=True)
    (folder / "good_mp3.txt").write_text(GOOD_TEXTS[8], encoding="utf-8")
    cafe = "The cafe owner smiled at the naive customer."
    cafe_1252 = "The caf\u00e9 owner smiled at the na\u00efve customer."
    _write(folder, "good_cp1252", _flite(cafe, scratch), cafe_1252.encode("cp1252"))

    (folder / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + rng.bytes(300))
    (folder / "corrupt.txt").write_text(GOOD_TEXTS[0])
    (folder / "empty.wav").write_bytes(b"")
    (folder / "empty.txt").write_text(GOOD_TEXTS[1])
    _write(folder, "silence", (rng.standard_normal(32000) * 1e-4).astype(np.float32), GOOD_TEXTS[2])
    _write(folder, "clipped", np.clip(speech[3] * 10.0, -1.0, 1.0), GOOD_TEXTS[3])
    reps = int(np.ceil(30.0 / (sum(len(s) for s in speech) / 16000)))
    gap = np.zeros(3200, np.float32)
    long = np.concatenate([np.concatenate([s, gap]) for _ in range(reps) for s in speech])[: 30 * 16000]
    _write(folder, "long", long, " ".join(GOOD_TEXTS * reps))
    s0 = speech[0]
    mid = len(s0) // 2
    _write(folder, "short", np.concatenate([np.zeros(6400, np.float32), s0[mid: mid + 4800], np.zeros(6400, np.float32)]),
           "the two")
    noise_std = float(np.sqrt(np.mean(speech[4] ** 2)))
    _write(folder, "noisy", speech[4] + rng.standard_normal(len(speech[4])).astype(np.float32) * noise_std,
           GOOD_TEXTS[4])
    # A transcript swapped with another clip's: each file carries the other's text.
    _write(folder, "swap_short", _flite(SHORT_TEXT, scratch), LONG_TEXT)
    _write(folder, "swap_long", _flite(LONG_TEXT, scratch), SHORT_TEXT)
    _write(folder, "no_text", speech[1], None)
    _write(folder, "garbage_text", speech[2], b"\x81\x8d\x90 \x9d\x8f")
    _write(folder, "blank_text", speech[3], "  ")
    # broken float exports, rates too low to hold speech, a header that claims hours (sparse: not decoded)
    nan = speech[0].copy()
    nan[100:200] = np.nan
    sf.write(folder / "nan_samples.wav", nan, 16000, subtype="FLOAT")
    (folder / "nan_samples.txt").write_text(GOOD_TEXTS[0])
    inf = speech[1].copy()
    inf[50] = np.inf
    sf.write(folder / "inf_samples.wav", inf, 16000, subtype="FLOAT")
    (folder / "inf_samples.txt").write_text(GOOD_TEXTS[1])
    _write(folder, "rate_4k", soxr.resample(speech[2], 16000, 4000), GOOD_TEXTS[2], sr=4000)
    _write(folder, "header_1hz", speech[3][:2000], GOOD_TEXTS[3], sr=1)
    import struct

    n = 64 * 1024 * 1024  # 2097 s of 16-bit 16 kHz audio, all a hole in a sparse file
    with open(folder / "header_hours.wav", "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36 + n) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
                + b"data" + struct.pack("<I", n))
        f.truncate(44 + n)
    (folder / "header_hours.txt").write_text(GOOD_TEXTS[4])
    dc_text = "The old dog barked at the mailman all morning."
    _write(folder, "good_dc_offset", np.clip(_flite(dc_text, scratch) * 0.5 + 0.2, -1, 1), dc_text)
    shutil.copy(folder / "good_1.wav", folder / "zz_duplicate.wav")
    (folder / "zz_duplicate.txt").write_text(GOOD_TEXTS[0])


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    base = tmp_path_factory.mktemp("messy")
    src = base / "messy_voice"
    make_messy_corpus(src, base)
    before = _hashes(src)
    out = base / "dataset"
    result = prepare(PrepareConfig(input=str(src), out=str(out), workers=1))
    return src, out, result, before


def test_prepare_quarantines_each_bad_item_with_its_reason(messy):
    src, out, result, _ = messy
    qc = json.loads((out / "qc.json").read_text())
    reasons = {q["id"]: q["reasons"] for q in qc["quarantine"]}
    assert reasons == {k: [v] for k, v in EXPECTED_QUARANTINE.items()}, reasons
    for q in qc["quarantine"]:
        assert all(m for m in q["messages"]), q
    assert result.n_quarantined == len(EXPECTED_QUARANTINE)


def test_prepare_keeps_good_items_with_warnings(messy):
    src, out, result, _ = messy
    ds = PreparedDataset.open(out)
    ids = {u.id for u in ds.manifest("train")} | {u.id for u in ds.manifest("val")}
    assert ids == EXPECTED_KEPT
    assert len(ds.manifest("val")) == 1
    assert ds.info.speakers == ["messy_voice"] and ds.info.format == "pairs"
    qc = json.loads((out / "qc.json").read_text())
    rows = {r["id"]: r for r in qc["utterances"]}
    for uid, code in EXPECTED_WARNINGS.items():
        assert rows[uid]["status"] == "kept"
        assert code in [i["code"] for i in rows[uid]["issues"]], rows[uid]
    assert rows["good_stereo"]["channels"] == 2
    train = ds.manifest("train") + ds.manifest("val")
    cafe = next(u for u in train if u.id == "good_cp1252")
    assert "caf\u00e9" in cafe.text
    for u in train:
        info = sf.info(str(out / u.audio))
        assert info.samplerate == 22050 and info.channels == 1 and info.subtype == "PCM_16"
        assert abs(info.frames / 22050 - u.duration) < 1e-3
    assert (out / "report.html").read_text().count("<tr>") > len(EXPECTED_QUARANTINE)
    assert {p.name for p in (out / "plots").iterdir()} >= {"durations.png", "speaking_rate.png",
                                                           "loudness_per_speaker.png"}
    assert len((out / "metadata.csv").read_text().splitlines()) == len(EXPECTED_KEPT)


def test_prepare_never_modifies_sources(messy):
    src, _, _, before = messy
    assert _hashes(src) == before


def test_prepare_rerun_reuses_finished_work(messy):
    src, out, first, before = messy
    manifest = (out / "train.jsonl").read_bytes()
    again = prepare(PrepareConfig(input=str(src), out=str(out), workers=1))
    # every item that reached the audio stage is reused (text-broken ones never get there)
    assert again.n_reused == first.n_items - 3
    assert (out / "train.jsonl").read_bytes() == manifest
    assert _hashes(src) == before


def test_prepare_with_silero_vad(demo_corpus_dir, tmp_path):
    import dataclasses

    from voicetrain.config import QCConfig

    out = tmp_path / "silero"
    r = prepare(PrepareConfig(input=str(demo_corpus_dir), out=str(out), workers=1,
                              qc=dataclasses.replace(QCConfig(), vad="silero")))
    assert r.n_kept == r.n_items == 12
    assert PreparedDataset.open(out).info.qc.vad == "silero"
