"""Explicit model registry: name -> (model class, config class, typed presets). No dynamic imports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar, Union

from torch import nn

from voicetrain.config import preset_config, to_dict
from voicetrain.models import fastspeech2, tacotron2

ModelConfig = Union[fastspeech2.FastSpeech2Config, tacotron2.Tacotron2Config]
"""The typed config of any registered model (each defined beside its model)."""
C = TypeVar("C", fastspeech2.FastSpeech2Config, tacotron2.Tacotron2Config)


@dataclass(frozen=True)
class ModelEntry(Generic[C]):
    cls: type[nn.Module]
    config_cls: type[C]
    presets: dict[str, C]
    default_lr: float
    """Peak learning rate when the run does not set one. FastSpeech 2 with the conv decoder
    learns fastest at 3e-3 (1e-3, 2e-3, 3e-3, 5e-3 measured in BENCHMARKS.md); Tacotron 2's
    recurrent attention wants the usual 1e-3."""


MODELS: dict[str, ModelEntry] = {
    "fastspeech2": ModelEntry(fastspeech2.FastSpeech2, fastspeech2.FastSpeech2Config, fastspeech2.PRESETS, 3e-3),
    "tacotron2": ModelEntry(tacotron2.Tacotron2, tacotron2.Tacotron2Config, tacotron2.PRESETS, 1e-3),
}


def model_config(name: str, preset: str, overrides: dict[str, Any] | None = None, where: str = "") -> ModelConfig:
    """The config dataclass of model ``name``: ``preset`` with ``overrides`` applied through the strict loader
    (unknown keys and out-of-range values are ConfigErrors naming ``where``, e.g. the file)."""
    return preset_config(MODELS, "model", name, preset, overrides, where)


def preset_overrides(name: str, preset: str, cfg: ModelConfig) -> dict[str, Any]:
    """The fields of ``cfg`` that differ from ``preset``'s (what a run's config.yaml stores)."""
    base = to_dict(MODELS[name].presets[preset])
    return {k: v for k, v in to_dict(cfg).items() if v != base[k]}


def build_model(name: str, cfg: ModelConfig, n_symbols: int, n_mels: int, n_speakers: int) -> nn.Module:
    return MODELS[name].cls(cfg, n_symbols=n_symbols, n_mels=n_mels, n_speakers=n_speakers)
