"""The vocoder interface every vocoder implements (Griffin-Lim, Vocos)."""

from __future__ import annotations

import torch
from torch import nn


class Vocoder(nn.Module):
    """Converts natural-log mel spectrograms (un-normalized) to waveforms.

    Subclasses implement :meth:`forward`: mel (B, n_mels, T) -> wav (B, T * hop_length).
    """

    name: str = "vocoder"

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError
