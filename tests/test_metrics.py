"""Evaluation metrics on real speech made by flite and sox (both installed on build machines).

Everything heavy is session-scoped: a handful of utterances is synthesized once and
one Evaluator loads each model once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicetrain.evaluation import metrics
from voicetrain.evaluation.evaluate_audio import evaluate_audio, load_transcripts
from voicetrain.evaluation.models import Evaluator, PocketsphinxASR

# Harvard sentences (not ARCTIC: flite's voices were built from ARCTIC recordings).
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
]

pytestmark = pytest.mark.skipif(shutil.which("flite") is None or shutil.which("sox") is None,
                                reason="needs flite and sox")


def _flite(voice: str, text: str, path: Path) -> Path:
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
    return path


def _read(path: Path) -> tuple[np.ndarray, int]:
    x, sr = sf.read(str(path), dtype="float32")
    return x, sr


def _with_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """x plus white noise at the given SNR (fixed seed: the same noise every run)."""
    noise = np.random.default_rng(seed).standard_normal(len(x)).astype(np.float32)
    noise *= np.sqrt(np.mean(x**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    y = x + noise
    return (y / max(1.0, float(np.max(np.abs(y))))).astype(np.float32)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("eval_corpus")
    out: dict[str, list[Path]] = {"rms": [], "slt": []}
    for voice, n in (("rms", 4), ("slt", 3)):
        for i, text in enumerate(SENTENCES[:n]):
            out[voice].append(_flite(voice, text, root / f"{voice}_{i}.wav"))
    x, sr = _read(out["rms"][0])
    noise = np.random.default_rng(1).standard_normal(len(x)).astype(np.float32) * 0.1
    sf.write(root / "noise.wav", noise, sr)
    out["noise"] = [root / "noise.wav"]
    return out


@pytest.fixture(scope="session")
def evaluator() -> Evaluator:
    return Evaluator()


# ----------------------------------------------------------------------------- text


def test_normalization_is_shared_by_both_sides():
    assert metrics.normalize_for_scoring("It's 42 Dogs, Dr. Who!") == "its forty two dogs doctor who"
    assert metrics.normalize_for_scoring("<s> it's forty-two [NOISE] dogs(2)") == "its forty two dogs"
    r = metrics.error_rates("Glue the sheet, to 2 blue cans.", "glue the sheet to two blue cans")
    assert r.wer == 0.0 and r.cer == 0.0
    assert metrics.error_rates("a b c d", "a x c").wer == pytest.approx(0.5)
    with pytest.raises(ValueError, match="empty"):
        metrics.error_rates("?!", "anything")


def test_load_transcripts_tsv_and_metadata(tmp_path):
    (tmp_path / "t.tsv").write_text("a\tHello there.\n\n# comment\nwavs/b.wav\tSecond one\n")
    assert load_transcripts(tmp_path / "t.tsv") == {"a": "Hello there.", "b": "Second one"}
    (tmp_path / "metadata.csv").write_text("LJ001|It cost $5.|It cost five dollars.\nLJ002|Plain\n")
    assert load_transcripts(tmp_path / "metadata.csv") == {"LJ001": "It cost $5.", "LJ002": "Plain"}
    (tmp_path / "bad.tsv").write_text("only-an-id\n")
    with pytest.raises(ValueError, match=r"bad.tsv:1"):
        load_transcripts(tmp_path / "bad.tsv")


# ----------------------------------------------------------------------------- intelligibility


def test_cer_of_speech_far_below_noise(corpus, evaluator):
    speech = [metrics.error_rates(t, evaluator.pocketsphinx.transcribe(*_read(p))).cer
              for t, p in zip(SENTENCES, corpus["rms"][:3])]
    noise = metrics.error_rates(SENTENCES[0], evaluator.pocketsphinx.transcribe(*_read(corpus["noise"][0]))).cer
    assert np.mean(speech) < 0.35, speech
    assert noise > 0.8
    assert np.mean(speech) < noise / 3


def test_transcripts_do_not_depend_on_order(corpus, evaluator):
    """A reused pocketsphinx Decoder adapts across utterances; ours must not."""
    # With reinit_feat() disabled, this very set flips "glue"/"blew" on the 2nd file between orders.
    files = corpus["rms"] + corpus["noise"]
    audio = {p: _read(p) for p in files}
    forward = {p: evaluator.pocketsphinx.transcribe(*audio[p]) for p in files}
    backward = {p: evaluator.pocketsphinx.transcribe(*audio[p]) for p in reversed(files)}
    assert forward == backward
    # ... and equal to what a brand-new decoder hears.
    assert PocketsphinxASR().transcribe(*audio[files[1]]) == forward[files[1]]


# ----------------------------------------------------------------------------- speaker similarity


def test_same_voice_is_more_similar_than_another_voice(corpus, evaluator):
    import torch

    threads = torch.get_num_threads()
    emb = {v: [evaluator.speaker_encoder.embed(*_read(p)) for p in corpus[v]] for v in ("rms", "slt")}
    assert torch.get_num_threads() == threads  # the encoder's thread setting is scoped
    # Centroids from utterances other than the ones scored (no utterance is compared with itself).
    centroids = {"rms": metrics.mean_embedding(emb["rms"][:2]), "slt": metrics.mean_embedding(emb["slt"][:2])}
    for e in emb["rms"][2:]:
        m = metrics.speaker_similarity(e, centroids, target="rms")
        assert m.target_similarity > m.similarities["slt"] + 0.05
        assert m.nearest == "rms" and not m.mismatch
    m = metrics.speaker_similarity(emb["slt"][2], centroids, target="rms")
    assert m.mismatch and m.nearest == "slt"


# ----------------------------------------------------------------------------- reference distances


def test_mcd_is_zero_on_itself_and_grows_with_noise(corpus):
    x, sr = _read(corpus["rms"][3])
    assert metrics.reference_distance(x, sr, x, sr).mcd_db == pytest.approx(0.0, abs=1e-6)
    mcds = [metrics.mcd_dtw(_with_noise(x, snr), sr, x, sr) for snr in (30, 20, 10, 0)]
    assert all(a < b for a, b in zip(mcds, mcds[1:])), mcds
    assert mcds[0] > 0.1


def test_f0_rmse_follows_a_pitch_shift(corpus, tmp_path):
    src = corpus["rms"][3]
    x, sr = _read(src)
    same = metrics.reference_distance(x, sr, x, sr)
    assert same.f0_rmse_cents == 0.0 and same.voicing_error == 0.0
    errs = []
    for cents in (100, 300):
        out = tmp_path / f"p{cents}.wav"
        subprocess.run(["sox", "-R", str(src), str(out), "pitch", str(cents)], check=True)
        d = metrics.reference_distance(*_read(out), x, sr)
        errs.append(d.f0_rmse_cents)
        assert d.voicing_error < 0.1  # the same words: voicing should mostly agree
    assert 50 < errs[0] < errs[1], errs


# ----------------------------------------------------------------------------- quality


def test_dnsmos_prefers_clean_speech(corpus, evaluator):
    x, sr = _read(corpus["rms"][0])
    clean = evaluator.dnsmos.score(x, sr)
    noisy = evaluator.dnsmos.score(_with_noise(x, 0), sr)
    assert 1.0 <= noisy.ovrl < clean.ovrl - 0.5 <= 5.0
    assert np.isnan(evaluator.dnsmos.score(np.zeros(sr, np.float32), sr).ovrl)  # silence: NaN, no crash


def test_real_time_factor():
    assert metrics.real_time_factor(0.5, 2.0) == 0.25
    with pytest.raises(ValueError):
        metrics.real_time_factor(1.0, 0.0)


# ----------------------------------------------------------------------------- folder evaluation + CLI


def test_eval_audio_folder_and_cli(corpus, evaluator, tmp_path):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir(), ref.mkdir()
    for i in (0, 1):
        shutil.copy(corpus["rms"][i], gen / f"u{i}.wav")
        shutil.copy(corpus["rms"][i], ref / f"u{i}.wav")
    (gen / "u0.txt").write_text(SENTENCES[0])  # .txt beside the wav for u0 ...
    (tmp_path / "texts.tsv").write_text(f"u1\t{SENTENCES[1]}\n")  # ... the TSV for u1 (--texts wins over a .txt)
    r = evaluate_audio(gen, ref, tmp_path / "texts.tsv", evaluator=evaluator, dnsmos=False)
    assert [u.id for u in r.utterances] == ["u0", "u1"]
    assert r.counts["cer"] == 2 and r.counts["mcd_db"] == 2 and r.counts["dnsmos_ovrl"] == 0
    assert r.means["mcd_db"] == pytest.approx(0.0, abs=1e-6)
    assert r.means["speaker_similarity"] > 0.8
    assert r.means["cer"] < 0.4

    from voicetrain.cli import main

    out = tmp_path / "eval.json"
    try:  # typer's standalone mode ends with SystemExit(0) on success
        main(["eval-audio", str(gen), "--texts", str(tmp_path / "texts.tsv"), "--no-dnsmos", "--out", str(out)])
    except SystemExit as e:
        assert e.code in (0, None)
    data = json.loads(out.read_text())
    assert len(data["utterances"]) == 2 and data["utterances"][1]["text"] == SENTENCES[1]
    assert data["utterances"][0]["mcd_db"] is None  # no --reference


def test_eval_audio_names_the_bad_file(tmp_path, evaluator):
    (tmp_path / "broken.wav").write_bytes(b"not a wav")
    with pytest.raises(Exception, match="broken.wav"):
        evaluate_audio(tmp_path, evaluator=evaluator)
