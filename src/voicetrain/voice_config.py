"""What a voice needs to speak, and nothing of how it was trained: ``VoiceConfig``.

A registry bundle (voice.json), an ONNX export and a Piper export carry a VoiceConfig; ``inference/``
depends on it alone. A training run's ``RunConfig`` derives one (``RunConfig.voice``). Bundles made
before VoiceConfig embed a whole RunConfig: :func:`voice_from_run_config` reads the voice's part of it
and ignores the training sections, so they keep loading (piper's voice.onnx.json is the model here:
only what inference reads).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from voicetrain.config import AudioConfig, ConfigError, TextConfig, from_dict
from voicetrain.models.registry import ModelConfig, model_config

def resolve_model_config(cls: type, data: dict[str, Any], value: Any, where: str) -> ModelConfig:
    """The typed model config of a mapping holding ``model``, ``preset`` and ``model_config`` (the preset's
    values with the mapping's ``model_config`` keys on top: a run's few overrides or a bundle's full list)."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    return model_config(data.get("model", defaults["model"]), data.get("preset", defaults["preset"]), value, where)


def typed_model_config(obj: Any) -> None:
    """In ``__post_init__``: a ``model_config`` given as a dict of overrides (or left out) becomes the typed
    config of ``obj.model`` / ``obj.preset``; a typed one must be the model's own class."""
    from voicetrain.models.registry import MODELS

    mc = obj.model_config
    if mc is None or isinstance(mc, dict):
        object.__setattr__(obj, "model_config", model_config(obj.model, obj.preset, mc, "model_config"))
    elif obj.model in MODELS and not isinstance(mc, MODELS[obj.model].config_cls):
        raise ConfigError(f"model_config: a {type(mc).__name__} does not configure model {obj.model!r}")


@dataclass(frozen=True)
class VoiceConfig:
    """The inference side of a voice: features, text, model and its typed config, speakers, vocoder."""

    __resolvers__ = {"model_config": lambda data, value, where: resolve_model_config(VoiceConfig, data, value, where)}
    model: str = "fastspeech2"
    preset: str = "cpu"
    """The size the voice was trained at (informative: ``model_config`` holds every value)."""
    model_config: ModelConfig = None  # type: ignore[assignment]  # None: the preset's config
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)
    speakers: list[str] = field(default_factory=list)
    """Speaker table: index = speaker id."""
    speaker_map: dict[str, str] = field(default_factory=dict)
    """Dataset speaker name -> speaker-table name (a voice fine-tuned with --speaker-name)."""
    vocoder: str = "griffin-lim"
    """'griffin-lim', 'builtin' or a vocoder run (a bundle's own vocoder.safetensors wins over it)."""

    def __post_init__(self) -> None:
        typed_model_config(self)


VOICE_KEYS = tuple(f.name for f in dataclasses.fields(VoiceConfig))


def voice_from_run_config(run_config: dict[str, Any], where: str) -> VoiceConfig:
    """The VoiceConfig of a training run's config as stored (a checkpoint's or an old bundle's ``run_config``):
    its voice keys, strictly checked; the training sections are not inference's to read."""
    if not isinstance(run_config, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(run_config).__name__}")
    return from_dict(VoiceConfig, {k: v for k, v in run_config.items() if k in VOICE_KEYS}, where)


def load_voice_config(info: dict[str, Any], where: str) -> VoiceConfig:
    """A bundle's or export's VoiceConfig: ``voice_config`` (since VoiceConfig), else derived from the
    ``run_config`` that older ones embed."""
    if "voice_config" in info:
        return from_dict(VoiceConfig, info["voice_config"], f"{where}:voice_config")
    if "run_config" in info:
        return voice_from_run_config(info["run_config"], f"{where}:run_config")
    raise ConfigError(f"{where} has neither voice_config nor run_config; it is not a voicetrain voice")
