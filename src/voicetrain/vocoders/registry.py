"""Explicit vocoder registry: name -> (class, config class, presets). No dynamic imports.

Griffin-Lim is not listed: it has no weights and no config to restore; a run names
it with the string ``"griffin-lim"`` (see :mod:`voicetrain.inference.vocoder`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from voicetrain.config import AudioConfig, ConfigError, from_dict
from voicetrain.vocoders import vocos
from voicetrain.vocoders.base import Vocoder


@dataclass(frozen=True)
class VocoderEntry:
    cls: type[Vocoder]
    config_cls: type
    presets: dict[str, Any]


VOCODERS: dict[str, VocoderEntry] = {
    "vocos": VocoderEntry(vocos.Vocos, vocos.VocosConfig, vocos.PRESETS),
}


def vocoder_config(name: str, preset: str, overrides: dict[str, Any] | None = None):
    """The config dataclass of vocoder ``name``: ``preset`` with ``overrides`` applied (unknown keys are errors)."""
    if name not in VOCODERS:
        raise ConfigError(f"unknown vocoder {name!r}; available: {', '.join(sorted(VOCODERS))}")
    entry = VOCODERS[name]
    if preset not in entry.presets:
        raise ConfigError(f"unknown preset {preset!r} for vocoder {name}; available: {', '.join(entry.presets)}")
    base = dataclasses.asdict(entry.presets[preset])
    base.update(overrides or {})
    return from_dict(entry.config_cls, base, where=f"model_config ({name})")


def build_vocoder(name: str, cfg, audio: AudioConfig) -> Vocoder:
    return VOCODERS[name].cls(cfg, audio)
