"""Vocoders: log-mel -> waveform. Griffin-Lim is the weight-free default; Vocos the trained, neural one."""

from voicetrain.vocoders.base import Vocoder
from voicetrain.vocoders.griffin_lim import GriffinLim
from voicetrain.vocoders.vocos import Vocos, VocosConfig

__all__ = ["Vocoder", "GriffinLim", "Vocos", "VocosConfig"]
