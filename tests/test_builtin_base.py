"""The shipped base voice `builtin`: listed read-only, loads offline and bit-identically, fine-tuned by default."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from voicetrain.registry.store import BUILTIN, ModelStore, RegistryError, builtin_dir, verify_bundle


def test_the_shipped_base_is_a_complete_small_bundle():
    files = verify_bundle(builtin_dir())  # every file against its sha256
    assert {"model.safetensors", "voice.json", "speaker_centroids.json", "README.md"} <= set(files)
    size = sum((builtin_dir() / f).stat().st_size for f in files)
    assert size < 8 * 1024 * 1024
    weights = load_file(str(builtin_dir() / "model.safetensors"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
    info = json.loads((builtin_dir() / "voice.json").read_text())
    speakers = info["speakers"]
    assert len(speakers) >= 20 and not [s for s in speakers if "slt" in s or s.startswith("flite_rms")]
    centroids = json.loads((builtin_dir() / "speaker_centroids.json").read_text())
    assert sorted(centroids) == sorted(speakers) and all(len(v) == 256 for v in centroids.values())


def test_registry_lists_builtin_read_only(tmp_path):
    store = ModelStore(tmp_path)
    (first,) = [b for b in store.list() if b.name == BUILTIN]
    assert first.version == "v1" and first.path == builtin_dir() and len(first.speakers) >= 20
    assert store.resolve("builtin") == store.resolve("builtin@v1") == builtin_dir()
    for attempt in (lambda: store.add_folder(BUILTIN, lambda tmp, v: None), lambda: store.tag("builtin@v1", "prod"),
                    lambda: store.remove("builtin@v1")):
        with pytest.raises(RegistryError, match="shipped base voice: it is read-only"):
            attempt()
    with pytest.raises(RegistryError, match="has only version v1"):
        store.resolve("builtin@v2")
    out = subprocess.run([sys.executable, "-m", "voicetrain.cli", "models", "list", "--store", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "builtin" in out.stdout, out.stdout + out.stderr


def test_shipped_weights_load_bit_identically_and_speak(tmp_path):
    from voicetrain.inference.bundle import load_voice
    from voicetrain.training.finetune import load_base

    shipped = {k: v.float() for k, v in load_file(str(builtin_dir() / "model.safetensors")).items()}
    voice = load_voice("builtin", store=tmp_path)
    via_registry = voice.synthesizer.model.state_dict()
    via_finetune = load_base(None).state
    assert shipped.keys() == via_registry.keys() == via_finetune.keys()
    for k, v in shipped.items():
        assert torch.equal(via_registry[k], v) and torch.equal(via_finetune[k], v), k
    audio, sr = voice.synthesize("The birch canoe slid on the smooth planks.", speaker=voice.speakers[0])
    assert sr == 22050 and np.isfinite(audio).all() and 1.0 < len(audio) / sr < 6.0
    assert np.abs(audio).max() > 0.05  # speech, not silence


def test_finetune_without_from_starts_from_builtin(tmp_path, prepared_demo_dataset):
    run = tmp_path / "ft"
    out = subprocess.run([sys.executable, "-m", "voicetrain.cli", "finetune", str(prepared_demo_dataset), "--out",
                          str(run), "--max-steps", "2", "--batch-size", "4", "--threads", "1", "--early-stop", "0"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert (run / "base.txt").read_text().strip() == str(builtin_dir())
    base_speakers = json.loads((builtin_dir() / "voice.json").read_text())["speakers"]
    cfg = json.loads(json.dumps(__import__("yaml").safe_load((run / "config.yaml").read_text())))
    assert cfg["speakers"][: len(base_speakers)] == base_speakers and len(cfg["speakers"]) == len(base_speakers) + 1
    init = json.loads((run / "speaker_init.json").read_text())
    (picked,) = init["speakers"].values()
    assert init["method"] == "nearest" and picked["nearest"] in base_speakers
    from voicetrain import hardware

    # no --precision: the machine's choice, as `train` makes it (bf16-mixed on CPUs with native bfloat16)
    assert cfg["train"]["precision"] == ("bf16-mixed" if hardware.cpu_native_bf16() else "32-true")
