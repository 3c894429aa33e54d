"""The config family: typed model configs through the strict loader, the inference-only VoiceConfig, fine-tuning
as one optional section, and an old run and bundle (tests/fixtures, written by voicetrain 0.1.0 before these
types) still loading and speaking."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from voicetrain.config import ConfigError, from_dict, load_yaml, save_yaml, to_dict, with_overrides
from voicetrain.models.fastspeech2 import FastSpeech2Config
from voicetrain.models.registry import MODELS
from voicetrain.models.tacotron2 import Tacotron2Config
from voicetrain.run_config import FinetuneConfig, RunConfig
from voicetrain.vocoder_config import VocoderOptimConfig
from voicetrain.voice_config import VoiceConfig

FIXTURES = Path(__file__).parent / "fixtures"
OLD_RUN, OLD_BUNDLE = FIXTURES / "old_run", FIXTURES / "old_bundle"


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    return p


def test_model_config_is_typed_and_presets_are_typed():
    cfg = RunConfig(preset="tiny", model_config={"hidden": 48})
    assert isinstance(cfg.model_config, FastSpeech2Config) and cfg.model_config.hidden == 48
    assert cfg.model_config.encoder_layers == MODELS["fastspeech2"].presets["tiny"].encoder_layers
    assert isinstance(RunConfig(model="tacotron2").model_config, Tacotron2Config)
    for entry in MODELS.values():
        assert all(isinstance(p, entry.config_cls) for p in entry.presets.values())


def test_unknown_model_key_names_the_key_and_the_file(tmp_path):
    p = _write(tmp_path, {"preset": "tiny", "model_config": {"hiden": 48}})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'hiden' in .*config\.yaml\.model_config"):
        load_yaml(RunConfig, p)


@pytest.mark.parametrize("key, value, expected", [
    ("hidden", -5, "a positive multiple of heads"), ("encoder_layers", 0, "an integer >= 1"), ("dropout", 1.5, r"\[0, 1\]"), ("decoder_type", "rnn", "'fft' or 'conv'"),
    ("hidden", 33, "multiple of heads"),
])
def test_model_ranges_are_checked_and_name_the_file(tmp_path, key, value, expected):
    p = _write(tmp_path, {"model_config": {key: value}})
    with pytest.raises(ConfigError, match=rf"config\.yaml: model_config\.{key}: .* out of range; expected .*{expected}"):
        load_yaml(RunConfig, p)


def test_tacotron_and_vocoder_ranges():
    with pytest.raises(ConfigError, match="model_config.reduction_factor"):
        RunConfig(model="tacotron2", model_config={"reduction_factor": 0})
    with pytest.raises(ConfigError, match="optim.lr"):
        VocoderOptimConfig(lr=None)
    with pytest.raises(ConfigError, match="optim.decay: 'noam'"):
        VocoderOptimConfig(decay="noam")  # the GAN has no warm-up for noam to follow
    with pytest.raises(ConfigError, match="model_config: a Tacotron2Config does not configure model 'fastspeech2'"):
        RunConfig(model_config=Tacotron2Config())


def test_saved_run_config_keeps_only_overrides_so_preset_still_means_a_size(tmp_path):
    cfg = RunConfig(preset="tiny", model_config={"hidden": 48})
    assert to_dict(cfg)["model_config"] == {"hidden": 48}
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(RunConfig, tmp_path / "c.yaml") == cfg
    bigger = with_overrides(cfg, [("preset", "cpu")])
    assert bigger.model_config.hidden == 48 and bigger.model_config.decoder_layers == 4  # cpu's, not tiny's 2
    assert with_overrides(cfg, ["model_config.heads=4"]).model_config.heads == 4


def test_the_old_run_config_loads_unchanged():
    text = (OLD_RUN / "config.yaml").read_text(encoding="utf-8")
    assert "finetune_strategy" in text and "model_config:" in text  # written before the new shape
    cfg = load_yaml(RunConfig, OLD_RUN / "config.yaml")
    assert cfg.preset == "tiny" and cfg.model_config.hidden == 24 and cfg.finetune is None
    assert to_dict(cfg)["model_config"] == {"hidden": 24, "ff_dim": 48, "predictor_filters": 24}


def test_old_fine_tune_fields_become_the_finetune_section(tmp_path):
    old = yaml.safe_load((OLD_RUN / "config.yaml").read_text(encoding="utf-8"))
    old.update(init_from="/base.ckpt", frozen=["encoder"], trainable_speakers=["me"], finetune_strategy="freeze-encoder")
    cfg = load_yaml(RunConfig, _write(tmp_path, old))
    assert cfg.finetune == FinetuneConfig(init_from="/base.ckpt", strategy="freeze-encoder", frozen=["encoder"],
                                          trainable_speakers=["me"])
    saved = to_dict(cfg)
    assert saved["finetune"]["strategy"] == "freeze-encoder" and "finetune_strategy" not in saved
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'lr' in .*finetune"):
        load_yaml(RunConfig, _write(tmp_path, {"finetune": {"strategy": "full", "lr": 1e-3}}))  # loop/optim live elsewhere


def test_voice_config_has_nothing_of_training():
    names = set(VoiceConfig.__dataclass_fields__)
    assert not names & {"optim", "train", "dataset", "finetune"}
    cfg = RunConfig(preset="tiny", speakers=["a", "b"])
    voice = cfg.voice
    assert voice.model_config == cfg.model_config and voice.speakers == ["a", "b"]
    assert from_dict(VoiceConfig, to_dict(voice)) == voice
    assert to_dict(voice)["model_config"]["encoder_layers"] == 1  # a bundle writes every value out


def test_the_old_run_loads_and_synthesizes():
    from voicetrain.inference.synthesizer import Synthesizer

    synth = Synthesizer.from_checkpoint(OLD_RUN, "last")
    audio, sr = synth.synthesize("The birch canoe slid on the smooth planks.")
    assert sr == 22050 and len(audio) > 0 and np.isfinite(audio).all()
    assert synth.speakers == ["flite_rms"] or len(synth.speakers) == 1


def test_an_old_bundle_with_a_run_config_loads_and_a_new_one_embeds_voice_config(tmp_path):
    import voicetrain
    from voicetrain.inference.bundle import register_run

    info = json.loads((OLD_BUNDLE / "voice.json").read_text(encoding="utf-8"))
    assert "run_config" in info and "voice_config" not in info
    old = voicetrain.load_voice(OLD_BUNDLE)
    ref, sr = old.synthesize("The birch canoe slid on the smooth planks.")
    assert len(ref) > 0

    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    new = register_run(run, name="again", checkpoint="last", store=tmp_path / "store")
    new_info = json.loads((new / "voice.json").read_text(encoding="utf-8"))
    assert "run_config" not in new_info and new_info["voice_config"]["model_config"]["hidden"] == 24
    assert not {"optim", "train", "dataset"} & set(new_info["voice_config"])
    audio, _ = voicetrain.load_voice(new).synthesize("The birch canoe slid on the smooth planks.")
    np.testing.assert_array_equal(audio, ref)  # the same weights speak the same through either config
