"""Registry: immutable versioned bundles, model cards, hash checks, load_voice round trip, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import voicetrain
from voicetrain.cli import app
from voicetrain.fileio import sha256_file
from voicetrain.inference.bundle import register_run
from voicetrain.registry.store import (
    BundleNotFoundError, DamagedBundleError, ModelStore, RegistryError, VoiceRef, validate_name)

TEXT = "The birch canoe slid on the smooth planks."


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_run) -> ModelStore:
    st = ModelStore(tmp_path_factory.mktemp("store"))
    register_run(tiny_run, "demo", store=st)
    return st


def _writable_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    return dst


def test_bundle_contents_and_card(store, tiny_run):
    path = store.resolve("demo")
    assert path == store.root / "demo" / "v1"
    names = {p.name for p in path.iterdir()}
    assert names == {"model.safetensors", "voice.json", "card.json", "card.md", "manifest.json"}
    assert not any(p.suffix in (".ckpt", ".pt", ".pkl") for p in path.iterdir())  # no pickle in a bundle
    manifest = json.loads((path / "manifest.json").read_text())["files"]
    assert set(manifest) == names - {"manifest.json"}
    assert all(sha256_file(path / f) == h for f, h in manifest.items())
    voice = json.loads((path / "voice.json").read_text())
    assert voice["schema_version"] == 1 and voice["voicetrain_version"] == voicetrain.__version__
    assert voice["speakers"] and voice["symbols"][0] == "_" and len(voice["stats"]["mel_mean"]) == voice["audio"]["n_mels"]
    assert voice["voice_config"]["preset"] == "tiny" and voice["vocoder"] == "griffin-lim"
    card = json.loads((path / "card.json").read_text())
    hp = card["architecture"]["hyperparameters"]
    assert hp["hidden"] == 32 and "max_frames_per_token" in hp and card["architecture"]["parameters"] > 0
    result = json.loads((tiny_run / "result.json").read_text())
    assert card["training"]["steps"] == result["steps"] and card["training"]["wall_seconds"] == result["wall_seconds"]
    assert card["training"]["metrics_rows"] > 0
    assert len(card["dataset"]["sha256"]) == 64 and card["dataset"]["hours"] > 0 and card["dataset"]["speakers"]
    assert card["base_model"] is None and card["evaluation"] is None and card["created"]
    md = (path / "card.md").read_text()
    assert "# demo v1" in md and "| hidden | 32 |" in md


def test_registered_voice_speaks_exactly_like_its_run(store, tiny_run):
    from voicetrain.inference.synthesizer import Synthesizer

    ref_audio, ref_sr = Synthesizer.from_checkpoint(tiny_run, "best").synthesize(TEXT)
    assert store.resolve("demo") == store.resolve("demo@latest") == store.resolve("demo@v1")
    for spec in ("demo", str(store.resolve("demo"))):
        audio, sr = voicetrain.load_voice(spec, store=store.root).synthesize(TEXT)
        assert sr == ref_sr
        np.testing.assert_array_equal(audio, ref_audio)


def test_versions_are_immutable(store, tiny_run, tmp_path):
    v1 = store.resolve("demo@v1")
    before = {p.name: (sha256_file(p), p.stat().st_mtime_ns) for p in v1.iterdir()}
    v2 = register_run(tiny_run, "demo", checkpoint="last", store=store)
    assert v2.name == "v2" and store.resolve("demo") == v2  # latest moves to the new version
    assert {p.name: (sha256_file(p), p.stat().st_mtime_ns) for p in v1.iterdir()} == before
    # files and folder are read-only on disk, and the API refuses to write an existing version
    assert all(p.stat().st_mode & 0o222 == 0 for p in [v1, *v1.iterdir()])
    with pytest.raises(RegistryError, match="immutable"):
        store.add_folder("demo", lambda tmp, version: (tmp / "x").write_text("x"), version="v1")
    if os.geteuid() != 0:  # root ignores permission bits
        with pytest.raises(PermissionError):
            (v1 / "voice.json").write_text("{}")
    assert {p.name: sha256_file(p) for p in v1.iterdir()} == {k: v[0] for k, v in before.items()}
    # tags, and removal never frees a version number
    assert store.tag("demo@v1", "prod") == "v1"
    assert store.resolve("demo@prod") == v1
    v3 = register_run(tiny_run, "demo", store=store)
    store.remove("demo@v3")
    assert not v3.exists()
    assert register_run(tiny_run, "demo", store=store).name == "v4"
    with pytest.raises(RegistryError, match="explicit version"):
        store.remove("demo@prod")
    with pytest.raises(BundleNotFoundError, match="no version v3"):
        store.resolve("demo@v3")
    with pytest.raises(BundleNotFoundError, match="no tag 'staging'"):
        store.resolve("demo@staging")
    with pytest.raises(BundleNotFoundError, match="no voice named 'nobody'"):
        voicetrain.load_voice("nobody", store=store.root)


@pytest.mark.parametrize("bad", ["", "../evil", "a/b", "/abs", ".hidden", "-flag", "a" * 65, "a..b", "sp ace",
                                 "ünï", "x\\y", "name\n"])
def test_malformed_names_are_refused(bad, tiny_run, tmp_path):
    with pytest.raises(RegistryError, match="invalid"):
        validate_name(bad)
    with pytest.raises(RegistryError):
        register_run(tiny_run, bad, store=ModelStore(tmp_path))
    assert not any(tmp_path.rglob("*.safetensors"))


@pytest.mark.parametrize("ref", ["demo@", "demo@../x", "demo@a/b", "@v1", "demo@v0"])
def test_malformed_refs_are_refused(ref):
    with pytest.raises(RegistryError):
        VoiceRef.parse(ref)


def test_damaged_bundle_is_refused_naming_the_file(store, tmp_path):
    bundle = _writable_copy(store.resolve("demo@v1"), tmp_path / "copy")
    weights = bundle / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # flip one bit in the middle of the tensors
    weights.write_bytes(bytes(data))
    with pytest.raises(DamagedBundleError, match=r"model\.safetensors is damaged.*sha256"):
        voicetrain.load_voice(bundle)
    weights.unlink()
    with pytest.raises(DamagedBundleError, match=r"model\.safetensors is missing"):
        voicetrain.load_voice(bundle)
    other = _writable_copy(store.resolve("demo@v1"), tmp_path / "copy2")
    (other / "extra.bin").write_bytes(b"x")
    with pytest.raises(DamagedBundleError, match=r"extra\.bin is not listed"):
        voicetrain.load_voice(other)


def test_load_path_never_imports_lightning(store):
    code = (
        "import sys, voicetrain\n"
        f"v = voicetrain.load_voice({str(store.resolve('demo@v1'))!r})\n"
        f"audio, sr = v.synthesize({TEXT!r})\n"
        "assert len(audio) > 0 and sr > 0\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'tensorboard')"
        " or m.startswith('voicetrain.training'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_import_voicetrain_is_cheap():
    r = subprocess.run([sys.executable, "-c", "import sys, voicetrain; print('torch' in sys.modules)"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr


def test_models_cli(tiny_run, tmp_path):
    runner = CliRunner()
    store = str(tmp_path / "store")
    r = runner.invoke(app, ["models", "add", str(tiny_run), "--name", "cli-voice", "--store", store])
    assert r.exit_code == 0, r.output
    assert "cli-voice@v1" in r.output
    r = runner.invoke(app, ["models", "add", str(tiny_run), "--name", "cli-voice", "--checkpoint", "last", "--store", store])
    assert r.exit_code == 0 and "cli-voice@v2" in r.output, r.output
    r = runner.invoke(app, ["models", "tag", "cli-voice@v1", "prod", "--store", store])
    assert r.exit_code == 0 and "-> v1" in r.output, r.output
    r = runner.invoke(app, ["models", "list", "--store", store])
    assert r.exit_code == 0 and "cli-voice@v1" in r.output and "prod" in r.output and "cli-voice@v2" in r.output
    r = runner.invoke(app, ["models", "show", "cli-voice@prod", "--store", store])
    assert r.exit_code == 0 and "# cli-voice v1" in r.output, r.output
    r = runner.invoke(app, ["models", "remove", "cli-voice@v2", "--store", store])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["models", "add", str(tiny_run), "--name", "../x", "--store", store])
    assert r.exit_code == 1 and "invalid voice name" in r.output
    r = runner.invoke(app, ["models", "show", "nope", "--store", store])
    assert r.exit_code == 1 and "no voice named 'nope'" in r.output
    env_store = tmp_path / "home"
    r = runner.invoke(app, ["models", "add", str(tiny_run), "--name", "envv"], env={"VOICETRAIN_HOME": str(env_store)})
    assert r.exit_code == 0 and (env_store / "models" / "envv" / "v1" / "voice.json").exists(), r.output


def test_registered_name_wins_over_a_same_named_folder(store, tmp_path, monkeypatch):
    from voicetrain.inference.bundle import resolve_voice
    from voicetrain.inference.export import load_source

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()  # e.g. a project folder called like the voice
    assert resolve_voice("demo", store.root) == store.resolve("demo")
    assert load_source("demo", store)[0].path == store.resolve("demo")
    with pytest.raises(RegistryError, match="not a voice bundle folder"):
        resolve_voice(tmp_path / "demo", store.root)


def test_card_gives_the_losses_at_the_checkpoint_of_a_run_that_trained_on(tmp_path):
    """A run continued past the registered checkpoint: the card must not pass the run's end off as the model's."""
    from voicetrain.registry.card import training_summary

    (tmp_path / "result.json").write_text(json.dumps({"steps": 300, "wall_seconds": 90.0, "final_val_loss": 1.5}))
    (tmp_path / "metrics.csv").write_text("step,train/loss,val/loss\n100,3.0,\n100,,2.9\n200,2.5,2.4\n300,2.0,1.5\n")
    s = training_summary(tmp_path, 200)
    assert (s["train_loss_at_checkpoint"], s["val_loss_at_checkpoint"]) == (2.5, 2.4)
    assert (s["steps"], s["final_val_loss"], s["last_metrics"]["step"]) == (300, 1.5, 300.0)
