"""Explicit vocoder registry: name -> (class, config class, presets). No dynamic imports.

Griffin-Lim is not listed: it has no weights and no config to restore; a run names
it with the string ``"griffin-lim"`` (see :mod:`voicetrain.inference.vocoder`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voicetrain.config import AudioConfig, preset_config
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
    return preset_config(VOCODERS, "vocoder", name, preset, overrides)


def build_vocoder(name: str, cfg, audio: AudioConfig) -> Vocoder:
    return VOCODERS[name].cls(cfg, audio)
