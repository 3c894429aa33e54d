"""The vocoder voicetrain ships (src/voicetrain/pretrained/vocoder): real trained weights, loaded from the
package with no network, that turn a real mel back into audio whose mel matches it (an untrained or damaged
generator does not), within the size budget, with its model card."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from voicetrain.audio.features import log_mel
from voicetrain.audio.io import load_mono, resample
from voicetrain.inference import vocoder as vmod

MAX_BYTES = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def real_mel(tmp_path_factory):
    from voicetrain.config import AudioConfig

    audio = AudioConfig()
    path = tmp_path_factory.mktemp("shipped") / "kal.wav"
    # kal: a flite voice outside the vocoder's corpus (kal16 is in it; kal is the 8 kHz diphone voice)
    subprocess.run(["flite", "-voice", "kal", "-t", "The birch canoe slid on the smooth planks.", "-o", str(path)],
                   check=True)
    wav, sr = load_mono(path)
    return torch.from_numpy(log_mel(resample(wav, sr, audio.sample_rate), audio))[None], audio


def test_the_package_ships_a_trained_vocoder_within_budget():
    folder = vmod.builtin_vocoder_dir()
    from safetensors import safe_open

    for name in (vmod.VOCODER_WEIGHTS, vmod.DISCRIMINATOR_WEIGHTS):
        assert (folder / name).stat().st_size < MAX_BYTES, name
        with safe_open(str(folder / name), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}, name
    info = json.loads((folder / vmod.BUILTIN_JSON).read_text())
    assert info["name"] == "vocos" and info["source"]["step"] > 2000  # past the reconstruction-only phase
    card = (folder / "README.md").read_text()
    assert "Whisper CER" in card and "slt" in card and "Griffin-Lim" in card


def test_shipped_vocoder_reconstructs_a_real_mel(real_mel):
    mel, audio = real_mel
    loaded = vmod.load_builtin_vocoder()
    assert loaded.audio == audio  # the prepare defaults: any voice prepared as usual can use it
    with torch.inference_mode():
        wav = loaded.vocoder(mel)[0].numpy()
    assert wav.shape == (mel.shape[-1] * audio.hop_length,) and np.isfinite(wav).all()
    back = torch.from_numpy(log_mel(wav, audio))[:, : mel.shape[-1]]
    voiced = mel[0] > np.log(1e-3)  # where there is speech energy
    err = (back - mel[0]).abs()[voiced].mean().item()
    assert err < 1.0, err  # 0.68 at step 7000 of the universal run on this 8 kHz voice; Griffin-Lim 0.32
    # the same architecture with untrained weights is far off: the bound above tells them apart
    from voicetrain.vocoders.registry import build_vocoder, vocoder_config

    torch.manual_seed(0)
    fresh = build_vocoder(loaded.name, vocoder_config(loaded.name, "cpu", loaded.model_config), audio)
    with torch.inference_mode():
        raw = fresh(mel)[0].numpy()
    assert (torch.from_numpy(log_mel(raw, audio))[:, : mel.shape[-1]] - mel[0]).abs()[voiced].mean().item() > 1.5 * err  # 1.63
