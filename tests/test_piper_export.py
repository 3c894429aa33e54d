"""`voicetrain export --format piper`: the real piper-tts 1.8.0 speaks the exported voice, as voicetrain does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
piper = pytest.importorskip("piper")

from piper import PiperVoice, SynthesisConfig  # noqa: E402

from voicetrain.audio.features import log_mel  # noqa: E402
from voicetrain.cli import app  # noqa: E402
from voicetrain.inference.export import ExportError  # noqa: E402
from voicetrain.inference.piper_export import (  # noqa: E402
    OnnxISTFT, OnnxVocos, build_piper_graph, export_piper, language_entry, phoneme_id_map)
from voicetrain.inference.synthesizer import Synthesizer  # noqa: E402
from voicetrain.inference.vocoder import load_builtin_vocoder  # noqa: E402

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "Hi!",
    "These days a chicken leg is a rare dish, and it costs 42 dollars on the 3rd of May.",
]


@pytest.fixture(scope="module")
def piper_voice(tmp_path_factory, tiny_run):
    out = tmp_path_factory.mktemp("piper")
    r = export_piper(tiny_run, out, name="en_US-tiny-medium")
    return r, Synthesizer.from_checkpoint(tiny_run, vocoder="builtin")


def _piper_tokens(voice: PiperVoice, text: str, n_symbols: int) -> list[int]:
    [phonemes] = voice.phonemize(text)  # one sentence
    ids = voice.phonemes_to_ids(phonemes)
    assert ids[0] == voice.config.phoneme_id_map["^"][0] and ids[-1] == voice.config.phoneme_id_map["$"][0]
    assert ids[1::2][:-1] == [0] * (len(ids) // 2 - 1)  # Piper's pads between phonemes
    return [i for i in ids if 0 < i < n_symbols]


def test_vocos_with_onnx_istft_matches_torch():
    voc = load_builtin_vocoder().vocoder
    torch.manual_seed(0)
    mel = torch.randn(1, 80, 41) - 5.0
    with torch.no_grad():
        a, b = voc(mel), OnnxVocos(voc)(mel)
    assert a.shape == b.shape == (1, 41 * 256)
    assert float((a - b).abs().max()) < 1e-5 * max(float(a.abs().max()), 1e-3)
    # a window shorter than n_fft (torch centres it) and frames that are not a whole overlap
    spec = torch.randn(2, 257, 13, dtype=torch.complex64)
    win = torch.hann_window(400)
    ref = torch.istft(spec, 512, 128, 400, window=win, center=True, length=13 * 128)
    got = OnnxISTFT(512, 128, win)(spec.real, spec.imag)
    assert float((ref - got).abs().max()) < 1e-5 * float(ref.abs().max())


def test_piper_phonemes_reach_the_model_as_voicetrain_symbols(piper_voice):
    r, synth = piper_voice
    voice = PiperVoice.load(r.onnx)
    table = synth.tokenizer.symbols
    graph = build_piper_graph_for(synth)
    for text in SENTENCES:
        vt_ids, vt_phonemes = synth.tokenizer(text)
        tokens = _piper_tokens(voice, text, len(table))
        assert table.decode(tokens) == table.decode(vt_ids) == vt_phonemes, text
        assert tokens == vt_ids, text
        # the graph's own front end drops ^, $ and the pads the same way
        ids = voice.phonemes_to_ids(voice.phonemize(text)[0])
        with torch.no_grad():
            got = graph.tokens(torch.tensor([ids]), torch.tensor([len(ids)]))
        assert got[0].tolist() == vt_ids, text


def build_piper_graph_for(synth: Synthesizer):
    from voicetrain.inference.bundle import BundleParts
    from voicetrain.run_config import RunConfig

    parts = BundleParts(None, {}, RunConfig(), synth.model, synth.tokenizer.symbols, synth.stats)
    return build_piper_graph(parts, synth.vocoder)


def test_piper_voice_in_process_speaks_what_voicetrain_speaks(piper_voice):
    r, synth = piper_voice
    voice = PiperVoice.load(r.onnx)
    cfg = json.loads(r.config.read_text(encoding="utf-8"))
    assert voice.config.sample_rate == synth.sample_rate == cfg["audio"]["sample_rate"]
    for text in SENTENCES:
        ids = voice.phonemes_to_ids(voice.phonemize(text)[0])
        for length_scale in (1.0, 2.0, 0.5):
            got = voice.phoneme_ids_to_audio(ids, SynthesisConfig(length_scale=length_scale, normalize_audio=False))
            ref, _ = synth.synthesize(text, speed=1.0 / length_scale)
            assert got.shape == ref.shape, (text, length_scale)
            assert float(np.abs(got - ref).max()) < 1e-4, (text, length_scale)
    # the length scale is honoured: twice the length scale, about twice the samples
    short = voice.phoneme_ids_to_audio(ids, SynthesisConfig(length_scale=1.0))
    long = voice.phoneme_ids_to_audio(ids, SynthesisConfig(length_scale=2.0))
    assert 1.6 < len(long) / len(short) < 2.4
    chunks = list(voice.synthesize(SENTENCES[0]))  # PiperVoice's own text path
    assert len(chunks) == 1 and chunks[0].audio_int16_array.size == synth.synthesize(SENTENCES[0])[0].size


def _mel_agreement(a: np.ndarray, b: np.ndarray, sr: int) -> tuple[float, float]:
    """(mean |log-mel difference|, correlation of the log-mels) of two peak-normalized signals."""
    from voicetrain.config import AudioConfig

    cfg = AudioConfig(sample_rate=sr)
    n = min(len(a), len(b))
    ma, mb = (log_mel((x[:n] / max(np.abs(x).max(), 1e-9)).astype(np.float32), cfg) for x in (a, b))
    return float(np.abs(ma - mb).mean()), float(np.corrcoef(ma.ravel(), mb.ravel())[0, 1])


def test_piper_cli_speaks_the_exported_voice(piper_voice, tmp_path):
    r, synth = piper_voice
    text = SENTENCES[0]
    wav = tmp_path / "out.wav"
    p = subprocess.run([sys.executable, "-m", "piper", "-m", str(r.onnx), "-f", str(wav)], input=text, text=True,
                       capture_output=True, timeout=120, cwd=tmp_path, env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
    assert p.returncode == 0, p.stderr
    audio, sr = sf.read(str(wav), dtype="float32")
    ref, ref_sr = synth.synthesize(text)
    assert sr == ref_sr
    assert abs(len(audio) - len(ref)) <= 0.05 * len(ref)
    l1, corr = _mel_agreement(audio, ref, sr)
    # piper peak-normalizes and writes 16-bit PCM; that is all that separates the two
    assert l1 < 0.01 and corr > 0.999, (l1, corr)  # measured: l1 3e-4, corr 0.9999998


def test_config_has_the_fields_piper_and_home_assistant_read(piper_voice):
    r, synth = piper_voice
    cfg = json.loads(r.config.read_text(encoding="utf-8"))
    assert r.onnx.name == "en_US-tiny-medium.onnx" and r.config.name == "en_US-tiny-medium.onnx.json"
    assert cfg["audio"] == {"sample_rate": 22050, "quality": "medium"}
    assert cfg["espeak"] == {"voice": "en-us"} and cfg["language"]["code"] == "en_US"
    assert cfg["phoneme_type"] == "espeak" and cfg["phoneme_map"] == {}
    assert set(cfg["inference"]) == {"noise_scale", "length_scale", "noise_w"}
    assert cfg["num_symbols"] == len(synth.tokenizer.symbols) + 2 == max(i for v in cfg["phoneme_id_map"].values()
                                                                       for i in v) + 1
    assert cfg["num_speakers"] == 1 and cfg["speaker_id_map"] == {}
    assert cfg["dataset"] == "en_US-tiny-medium" and cfg["piper_version"]
    ids = {s: v[0] for s, v in cfg["phoneme_id_map"].items()}
    assert ids["_"] == 0 and all(ids[s] == i for i, s in enumerate(synth.tokenizer.symbols.symbols))
    import onnxruntime

    sess = onnxruntime.InferenceSession(str(r.onnx), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input", "input_lengths", "scales"]
    assert [o.name for o in sess.get_outputs()] == ["output"]


def test_phoneme_id_map_joins_decomposed_symbols_and_folds_case():
    from piper.phonemize_espeak import _merge_known_vowel_clusters

    id_map, clusters = phoneme_id_map(("_", " ", "ç", "a"), "espeak")
    assert id_map["ç"] == [2] and id_map["c\u0327"] == [2] and clusters == [["c", "\u0327"]]
    assert _merge_known_vowel_clusters(["a", "c", "\u0327"], {tuple(c) for c in clusters}) == ["a", "c\u0327"]
    text_map, _ = phoneme_id_map(("_", " ", "a", "b"), "text")
    assert text_map["A"] == text_map["a"] == [2] and text_map["B"] == [3]
    with pytest.raises(ExportError, match="reserves"):
        phoneme_id_map(("_", "^", "a"), "espeak")
    assert language_entry("en-us") == {"code": "en_US", "family": "en", "region": "US"}
    assert language_entry("de")["code"] == "de"


def test_bad_input_gives_clear_errors(piper_voice, tiny_run, tmp_path):
    r, _ = piper_voice
    with pytest.raises(ExportError, match="--force"):
        export_piper(tiny_run, r.onnx.parent, name="en_US-tiny-medium")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        export_piper(tiny_run, tmp_path / "file")
    with pytest.raises(ExportError, match="not a usable file name"):
        export_piper(tiny_run, tmp_path / "o", name="../evil")
    before = r.onnx.read_bytes()
    runner = CliRunner()
    res = runner.invoke(app, ["export", "no-such-voice", "--format", "piper", "--out", str(tmp_path / "o"),
                              "--store", str(tmp_path / "store")])
    assert res.exit_code == 1 and "no-such-voice" in res.output
    res = runner.invoke(app, ["export", str(tiny_run), "--format", "piper", "--out", str(r.onnx.parent),
                              "--name", "en_US-tiny-medium"])
    assert res.exit_code == 1 and "--force" in res.output
    assert r.onnx.read_bytes() == before  # the refused export left the voice untouched
    res = runner.invoke(app, ["export", str(tiny_run), "--format", "onnx", "--out", str(tmp_path / "p"), "--force"])
    assert res.exit_code == 1 and "piper only" in res.output
    res = runner.invoke(app, ["export", str(tiny_run), "--format", "piper", "--out", str(tmp_path / "cli"),
                              "--checkpoint", "last"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / f"{tiny_run.name}.onnx").is_file() and "piper -m" in res.output


@pytest.fixture(scope="module")
def two_speaker_run(tmp_path_factory):
    """A tiny 2-speaker run (flite rms and awb, 5 utterances each, 6 steps)."""
    from tests.conftest import tiny_cfg
    from voicetrain.data.demo import make_demo_corpus
    from voicetrain.data.prepare import PrepareConfig, prepare
    from voicetrain.training.train import train

    root = tmp_path_factory.mktemp("two_speakers")
    make_demo_corpus(root / "corpus", ["flite:rms", "flite:awb"], utterances=5, seed=0)
    prepare(PrepareConfig(input=str(root / "corpus"), out=str(root / "dataset")))
    train(root / "dataset", root / "run", tiny_cfg(max_steps=6, val_every_steps=6, checkpoint_every_steps=6,
                                                  sample_every_steps=100))
    return root / "run"


def test_multi_speaker_export_speaks_with_speaker_flag(two_speaker_run, tmp_path):
    r = export_piper(two_speaker_run, tmp_path, name="two")
    cfg = json.loads(r.config.read_text(encoding="utf-8"))
    synth = Synthesizer.from_checkpoint(two_speaker_run, vocoder="builtin")
    assert cfg["num_speakers"] == 2 and cfg["speaker_id_map"] == {s: i for i, s in enumerate(synth.speakers)}
    text = SENTENCES[1]  # has a phoneme this tiny corpus lacks: piper and voicetrain both skip it
    waves = []
    for sid in (0, 1):
        wav = tmp_path / f"s{sid}.wav"
        p = subprocess.run([sys.executable, "-m", "piper", "-m", str(r.onnx), "-s", str(sid), "-f", str(wav)],
                           input=text, text=True, capture_output=True, timeout=120, cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        audio, sr = sf.read(str(wav), dtype="float32")
        ref, _ = synth.synthesize(text, speaker=sid)
        assert abs(len(audio) - len(ref)) <= 0.05 * len(ref)
        l1, corr = _mel_agreement(audio, ref, sr)
        assert l1 < 0.01 and corr > 0.999, (sid, l1, corr)
        waves.append(audio)
    n = min(len(w) for w in waves)
    assert not np.allclose(waves[0][:n], waves[1][:n], atol=1e-3)  # -s 1 is another speaker
    voice = PiperVoice.load(r.onnx)
    got = voice.phoneme_ids_to_audio(voice.phonemes_to_ids(voice.phonemize(text)[0]),
                                     SynthesisConfig(speaker_id=1, normalize_audio=False))
    ref, _ = synth.synthesize(text, speaker=1)
    assert got.shape == ref.shape and float(np.abs(got - ref).max()) < 1e-4


def test_griffin_lim_in_the_graph_matches_torch_griffin_lim(piper_voice, tiny_run, tmp_path):
    from voicetrain.vocoders.griffin_lim import GriffinLim

    _, synth = piper_voice
    r = export_piper(tiny_run, tmp_path, name="gl", vocoder="griffin-lim", griffin_lim_iters=4)
    assert "griffin-lim" in json.loads(r.config.read_text(encoding="utf-8"))["voicetrain"]["vocoder"]
    voice = PiperVoice.load(r.onnx)
    gl = GriffinLim(synth.audio, n_iter=4)
    for text in (SENTENCES[0], SENTENCES[3]):  # "Hi!" is shorter than Griffin-Lim's minimum frames
        ids = voice.phonemes_to_ids(voice.phonemize(text)[0])
        got = voice.phoneme_ids_to_audio(ids, SynthesisConfig(normalize_audio=False))
        with torch.no_grad():
            ref = gl(synth.mel_for_ids(synth.tokenizer(text)[0])[None])[0].numpy()
        assert got.shape == ref.shape, text
        assert float(np.abs(got - ref).max()) < 1e-3 * float(np.abs(ref).max()), text
