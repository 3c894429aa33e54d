"""Vocoders: log-mel -> waveform. Griffin-Lim is the weight-free default."""

from voicetrain.vocoders.base import Vocoder
from voicetrain.vocoders.griffin_lim import GriffinLim

__all__ = ["Vocoder", "GriffinLim"]
