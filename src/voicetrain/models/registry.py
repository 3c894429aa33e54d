"""Explicit model registry: name -> (model class, config class, presets). No dynamic imports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from voicetrain.config import preset_config
from voicetrain.models import fastspeech2, tacotron2


@dataclass(frozen=True)
class ModelEntry:
    cls: type[nn.Module]
    config_cls: type
    presets: dict[str, Any]
    default_lr: float
    """Peak learning rate when the run does not set one. FastSpeech 2 with the conv decoder
    learns fastest at 3e-3 (1e-3, 2e-3, 3e-3, 5e-3 measured in BENCHMARKS.md); Tacotron 2's
    recurrent attention wants the usual 1e-3."""


MODELS: dict[str, ModelEntry] = {
    "fastspeech2": ModelEntry(fastspeech2.FastSpeech2, fastspeech2.FastSpeech2Config, fastspeech2.PRESETS, 3e-3),
    "tacotron2": ModelEntry(tacotron2.Tacotron2, tacotron2.Tacotron2Config, tacotron2.PRESETS, 1e-3),
}


def model_config(name: str, preset: str, overrides: dict[str, Any] | None = None):
    """The config dataclass of model ``name``: ``preset`` with ``overrides`` applied (unknown keys are errors)."""
    return preset_config(MODELS, "model", name, preset, overrides)


def build_model(name: str, cfg, n_symbols: int, n_mels: int, n_speakers: int) -> nn.Module:
    return MODELS[name].cls(cfg, n_symbols=n_symbols, n_mels=n_mels, n_speakers=n_speakers)
