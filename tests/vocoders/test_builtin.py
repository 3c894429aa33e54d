"""`--vocoder builtin`: a vocoder shipped as fp16 safetensors in the package, loaded offline, carried by
bundles, and continued by `train-vocoder --from builtin`. The shipping path is exercised on the tiny
vocoder run, written to a temporary package folder."""

from __future__ import annotations

import json

import pytest
import torch

from voicetrain.inference import vocoder as vmod


@pytest.fixture()
def shipped(tmp_path, monkeypatch, tiny_vocoder_run):
    from voicetrain.inference.checkpoint import find_checkpoint, load_checkpoint_safe

    loaded = vmod.load_vocoder_checkpoint(tiny_vocoder_run)
    ckpt = load_checkpoint_safe(find_checkpoint(tiny_vocoder_run, "last"))
    live = ckpt.get("current_model_state") or ckpt["state_dict"]
    disc = {k: v for k, v in live.items() if k.startswith(("mpd.", "mrd."))}
    folder = tmp_path / "pretrained" / "vocoder"
    vmod.write_pretrained_vocoder(loaded, folder, "# card\n",
                                  {"vocoder_run_config": ckpt["voicetrain"]["vocoder_run_config"]}, discriminators=disc)
    monkeypatch.setattr(vmod, "builtin_vocoder_dir", lambda: folder)
    return folder, loaded


def test_builtin_loads_offline_and_vocodes_a_mel(shipped):
    folder, source = shipped
    from safetensors import safe_open

    with safe_open(str(folder / vmod.VOCODER_WEIGHTS), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert json.loads((folder / vmod.BUILTIN_JSON).read_text())["name"] == "vocos"
    voc = vmod.load_vocoder("builtin", source.audio)
    mel = torch.randn(1, source.audio.n_mels, 40) - 4.0
    with torch.inference_mode():
        a, b = voc(mel), source.vocoder(mel)
    assert a.shape == b.shape == (1, 40 * source.audio.hop_length)
    assert torch.allclose(a, b, atol=2e-2 * float(b.abs().max()) + 1e-4)  # fp16 rounding only
    assert vmod.vocoder_spec("builtin") == "builtin" and vmod.vocoder_exists("builtin")


def test_synth_and_bundle_carry_the_builtin(shipped, tiny_run, tmp_path):
    from voicetrain.inference.synthesizer import Synthesizer
    from voicetrain.inference.bundle import register_run
    from voicetrain.registry.store import ModelStore

    synth = Synthesizer.from_checkpoint(tiny_run, vocoder="builtin")
    assert synth.vocoder.name == "vocos"
    wav, sr = synth.synthesize("Hello there.")
    assert len(wav) > 0
    path = register_run(tiny_run, "withbuiltin", "last", ModelStore(tmp_path / "store"), vocoder="builtin")
    info = json.loads((path / "voice.json").read_text())
    assert info["vocoder"]["name"] == "vocos" and (path / vmod.VOCODER_WEIGHTS).is_file()


def test_griffin_lim_is_still_selectable(shipped, tiny_run):
    from voicetrain.inference.synthesizer import Synthesizer

    assert Synthesizer.from_checkpoint(tiny_run, vocoder="griffin-lim").vocoder.name == "griffin-lim"


def test_train_vocoder_from_builtin_warm_starts(shipped, prepared_demo_dataset, tmp_path):
    from safetensors.torch import load_file, save_file

    from tests.vocoders.conftest import tiny_vocoder_cfg
    from voicetrain.training.train_vocoder import train_vocoder

    folder, _ = shipped
    # mark the shipped weights: a fresh initialisation from the same seed would otherwise look alike
    marked = load_file(str(folder / vmod.VOCODER_WEIGHTS))
    k = next(iter(marked))
    marked[k] = marked[k] + 0.5
    save_file(marked, str(folder / vmod.VOCODER_WEIGHTS))
    r = train_vocoder(prepared_demo_dataset, tmp_path / "cont", tiny_vocoder_cfg(max_steps=1), init_from="builtin")
    cfg = (tmp_path / "cont" / "config.yaml").read_text()
    assert "init_from: builtin" in cfg and r.steps == 1
    # the warm start really loaded the shipped weights: one step at this lr stays near them
    cont = vmod.load_vocoder_checkpoint(tmp_path / "cont")
    assert torch.allclose(cont.vocoder.state_dict()[k].float(), marked[k].float(), atol=5e-2)


def test_missing_builtin_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(vmod, "builtin_vocoder_dir", lambda: tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="ships no built-in vocoder"):
        vmod.load_vocoder("builtin", None)
    assert not vmod.vocoder_exists("builtin")
