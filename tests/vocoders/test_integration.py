"""A trained vocoder behind synth, eval, the registry bundle and export; Griffin-Lim stays the fallback."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

import voicetrain
from voicetrain.cli import app
from voicetrain.inference.checkpoint import find_checkpoint, load_checkpoint_safe, load_model
from voicetrain.inference.synthesizer import Synthesizer
from voicetrain.inference.vocoder import VocoderError, load_vocoder, vocoder_spec
from voicetrain.inference.bundle import register_run
from voicetrain.registry.store import ModelStore
from voicetrain.training.checkpoint_io import save_checkpoint_atomic
from voicetrain.vocoders import GriffinLim, Vocos

TEXT = "The birch canoe slid on the smooth planks."
runner = CliRunner()


@pytest.fixture(scope="module")
def store_with_vocoder(tmp_path_factory, tiny_run, tiny_vocoder_run) -> ModelStore:
    st = ModelStore(tmp_path_factory.mktemp("store"))
    register_run(tiny_run, "neural", store=st, vocoder=tiny_vocoder_run)
    return st


def test_bundle_carries_the_vocoder_and_speaks_identically(store_with_vocoder, tiny_run, tiny_vocoder_run):
    path = store_with_vocoder.resolve("neural")
    assert (path / "vocoder.safetensors").is_file()
    voice = json.loads((path / "voice.json").read_text())
    assert voice["vocoder"]["name"] == "vocos" and voice["vocoder"]["weights"] == "vocoder.safetensors"
    ref, sr = Synthesizer.from_checkpoint(tiny_run, vocoder=str(tiny_vocoder_run)).synthesize(TEXT)
    # the bundle alone (the vocoder run moved away) gives the same audio, bit for bit
    moved = tiny_vocoder_run.parent / "moved_away"
    tiny_vocoder_run.rename(moved)
    try:
        v = voicetrain.load_voice(str(path))
        assert isinstance(v.synthesizer.vocoder, Vocos)
        audio, sr2 = v.synthesize(TEXT)
    finally:
        moved.rename(tiny_vocoder_run)
    assert sr2 == sr
    np.testing.assert_array_equal(audio, ref)
    gl, _ = Synthesizer.from_checkpoint(tiny_run, vocoder="griffin-lim").synthesize(TEXT)
    assert len(gl) != len(audio) or not np.array_equal(gl, audio)


def test_run_named_vocoder_and_fallback(tiny_run, tiny_vocoder_run, tmp_path):
    loaded = load_model(find_checkpoint(tiny_run))
    cfg = dataclasses.replace(loaded.voice, vocoder=str(tiny_vocoder_run))
    synth = Synthesizer.from_parts(loaded.model, cfg, loaded.symbols, loaded.stats)
    assert isinstance(synth.vocoder, Vocos)
    gone = dataclasses.replace(cfg, vocoder=str(tmp_path / "deleted_vocoder_run"))
    with pytest.warns(UserWarning, match="griffin-lim"):
        synth = Synthesizer.from_parts(loaded.model, gone, loaded.symbols, loaded.stats)
    assert isinstance(synth.vocoder, GriffinLim)
    with pytest.raises(FileNotFoundError):  # named explicitly: an error, not a silent fallback
        Synthesizer.from_parts(loaded.model, cfg, loaded.symbols, loaded.stats, vocoder=str(tmp_path / "nope"))


def test_synth_cli_vocoder_option(tiny_run, tiny_vocoder_run, tmp_path):
    out = tmp_path / "n.wav"
    r = runner.invoke(app, ["synth", str(tiny_run), "--text", TEXT, "--out", str(out), "--vocoder", str(tiny_vocoder_run)])
    assert r.exit_code == 0, r.output
    audio, sr = sf.read(out)
    assert sr == 22050 and len(audio) > 0.1 * sr
    r = runner.invoke(app, ["synth", str(tiny_run), "--text", TEXT, "--out", str(out), "--vocoder", str(tiny_run)])
    assert r.exit_code == 1 and "acoustic model" in r.output  # an acoustic run is not a vocoder


def test_vocoder_for_other_mels_is_refused(tiny_run, tiny_vocoder_run, tmp_path):
    """A vocoder trained on another frame grid names the differing fields instead of producing noise."""
    ck = load_checkpoint_safe(find_checkpoint(tiny_vocoder_run))
    ck["voicetrain"]["audio"]["hop_length"] = 128
    bad = tmp_path / "other_hop.ckpt"
    save_checkpoint_atomic(ck, bad)
    audio = load_model(find_checkpoint(tiny_run)).voice.audio
    with pytest.raises(VocoderError, match="hop_length 128 vs 256"):
        load_vocoder(bad, audio)


def test_eval_with_vocoder(tiny_run, tiny_vocoder_run, tmp_path):
    from voicetrain.evaluation.evaluate_run import RunEvalConfig, evaluate_run

    r = evaluate_run(RunEvalConfig(run=str(tiny_run), vocoder=str(tiny_vocoder_run), max_utterances=1,
                                   dnsmos=False, speaker_similarity=False, progress=False, out=str(tmp_path / "ev")))
    assert r["checkpoints"][0]["vocoder"] == "vocos"
    assert r["settings"]["vocoder"] == str(tiny_vocoder_run)


def test_export_carries_the_vocoder(store_with_vocoder, tmp_path):
    pytest.importorskip("onnx")
    from voicetrain.inference.export import export_onnx
    from voicetrain.inference.onnx_runtime import load_onnx_synthesizer

    out = tmp_path / "onnx"
    export_onnx(str(store_with_vocoder.resolve("neural")), out)
    assert (out / "vocoder.safetensors").is_file()
    cfg = json.loads((out / "model.onnx.json").read_text())
    assert cfg["vocoder"]["name"] == "vocos" and len(cfg["vocoder"]["sha256"]) == 64
    synth = load_onnx_synthesizer(out)
    assert isinstance(synth.vocoder, Vocos)
    bundled = voicetrain.load_voice(str(store_with_vocoder.resolve("neural"))).synthesizer.vocoder
    for (k, a), (_, b) in zip(synth.vocoder.state_dict().items(), bundled.state_dict().items()):
        assert torch.equal(a, b), k
    audio, sr = synth.synthesize(TEXT)
    assert sr == 22050 and len(audio) > 0


def test_vocoder_spec_for_run_configs(tiny_vocoder_run, tmp_path, monkeypatch):
    """`train --vocoder` stores 'griffin-lim' or an absolute path: the run must work from any cwd."""
    assert vocoder_spec("Griffin-Lim") == vocoder_spec(None) == "griffin-lim"
    monkeypatch.chdir(tiny_vocoder_run.parent)
    assert vocoder_spec(tiny_vocoder_run.name) == str(tiny_vocoder_run.resolve())
    with pytest.raises(FileNotFoundError):
        vocoder_spec(str(tmp_path / "missing"))
