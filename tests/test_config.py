"""The strict config loader: YAML files, dotted overrides (--set) and old files alike."""

import pytest

from voicetrain.config import ConfigError, load_yaml, parse_assignment, save_yaml, with_overrides
from voicetrain.run_config import RunConfig
from voicetrain.vocoder_config import VocoderRunConfig


def test_parse_assignment_reads_yaml_values():
    assert parse_assignment("optim.lr=1e-3") == ("optim.lr", 0.001)
    assert parse_assignment("train.batch_size=8") == ("train.batch_size", 8)
    assert parse_assignment("train.snapshot_minutes=[5, 10]") == ("train.snapshot_minutes", [5, 10])
    assert parse_assignment("train.precision=bf16-mixed") == ("train.precision", "bf16-mixed")


def test_overrides_go_through_the_strict_loader():
    cfg = with_overrides(VocoderRunConfig(), ["loss.mel_weight=90", ("train.threads", 1), "train.devices=2"])
    assert cfg.train.devices == "2"  # a text field keeps the text YAML would read as a number
    assert cfg.loss.mel_weight == 90.0 and isinstance(cfg.loss.mel_weight, float) and cfg.train.threads == 1
    assert cfg.optim == VocoderRunConfig().optim  # nothing else moves
    with pytest.raises(ConfigError, match="valid keys: .*mel_weight"):
        with_overrides(VocoderRunConfig(), ["loss.mel_weigth=90"])
    with pytest.raises(ConfigError, match="must be int"):
        with_overrides(RunConfig(), ["train.batch_size=many"])


def test_yaml_strictness_unknown_key_and_newer_schema(tmp_path):
    p = tmp_path / "c.yaml"
    save_yaml(with_overrides(RunConfig(), ["optim.lr=0.002"]), p)
    assert load_yaml(RunConfig, p).optim.lr == 0.002
    p.write_text("train:\n  batch_sise: 4\n")
    with pytest.raises(ConfigError, match="unknown key.*batch_sise"):
        load_yaml(RunConfig, p)
    p.write_text("schema_version: 99\n")
    with pytest.raises(ConfigError, match="newer than this voicetrain"):
        load_yaml(RunConfig, p)


def test_both_loops_share_one_range_check():
    from voicetrain.config import LoopConfig
    from voicetrain.run_config import TrainConfig
    from voicetrain.vocoder_config import VocoderTrainConfig

    assert issubclass(TrainConfig, LoopConfig) and issubclass(VocoderTrainConfig, LoopConfig)
    for cfg in (RunConfig(), VocoderRunConfig()):
        for bad, says in [("train.keep_last=0", "train.keep_last: 0"), ("train.log_every_steps=0", "log_every_steps"),
                          ("train.snapshot_minutes=[-1]", "snapshot_minutes")]:
            with pytest.raises(ConfigError, match=says):
                with_overrides(cfg, [bad])
    with pytest.raises(ConfigError, match="segment_frames: 1"):
        with_overrides(VocoderRunConfig(), ["train.segment_frames=1"])
    assert VocoderTrainConfig().val_every_steps == 500 and TrainConfig().val_every_steps == 200  # own defaults
