"""GAN discriminators for vocoder training: multi-period (HiFi-GAN) and multi-resolution (UnivNet).

Both are used only in training; synthesis never builds them. They are sized far
below the papers' (HiFi-GAN's MPD has up to 1024 channels): on a CPU every
discriminator pass runs twice per step (real and generated, then generated again for
the generator), so their cost decides how many steps a training hour gives.

Each forward takes a waveform batch (B, S) and returns ``(logits, features)``:
one logit tensor per sub-discriminator and, per sub-discriminator, the list of its
intermediate activations (for the feature-matching loss).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

LRELU_SLOPE = 0.1


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Sizes of both discriminators. The default is the CPU preset; see :data:`PRESETS`."""

    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    """MPD periods: primes, so the sub-discriminators look at different sample lattices."""
    mpd_channels: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    """Channels of the strided convolutions of each period discriminator (HiFi-GAN: 32, 128, 512, 1024;
    these were 4x cheaper per step than 16..128 on this CPU, and the MPD's cost then matches the MRD's)."""
    resolutions: list[list[int]] = field(default_factory=lambda: [[1024, 256, 1024], [512, 128, 512],
                                                                  [2048, 512, 2048]])
    """MRD (n_fft, hop, window) per sub-discriminator: Vocos' three resolutions."""
    mrd_channels: int = 16
    """Channels of each resolution discriminator (UnivNet uses 32)."""


PRESETS: dict[str, DiscriminatorConfig] = {
    "tiny": DiscriminatorConfig(periods=[2, 3], mpd_channels=[4, 8], resolutions=[[256, 64, 256]], mrd_channels=4),
    "cpu": DiscriminatorConfig(),
    "gpu": DiscriminatorConfig(mpd_channels=[32, 128, 512, 1024], mrd_channels=32),
}

Features = list[list[torch.Tensor]]


class PeriodDiscriminator(nn.Module):
    """Folds the wave into (S / p, p) and convolves along time only: sees periodic structure of period p.

    HiFi-GAN writes this as Conv2d with (k, 1) kernels; the same maths as Conv1d over the
    p columns folded into the batch ran ~2x faster on this CPU.
    """

    def __init__(self, period: int, channels: list[int], kernel: int = 5, stride: int = 3):
        super().__init__()
        self.period = period
        chans = [1, *channels]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv1d(chans[i], chans[i + 1], kernel, stride, padding=kernel // 2))
            for i in range(len(channels)))
        last = chans[-1]
        self.convs.append(weight_norm(nn.Conv1d(last, last, kernel, 1, padding=kernel // 2)))
        self.out = weight_norm(nn.Conv1d(last, 1, 3, 1, padding=1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """wav (B, S) -> (logits (B, N), features)."""
        B, S = wav.shape
        p = self.period
        pad = (-S) % p
        if pad:
            wav = F.pad(wav[:, None], (0, pad), mode="reflect" if pad < S else "constant")[:, 0]
        # (B, S) -> (B, S/p, p) -> (B * p, 1, S/p): column j holds samples j, j+p, j+2p, ...
        x = wav.view(B, -1, p).transpose(1, 2).reshape(B * p, 1, -1)
        feats = []  # viewed as (B, p, C, L): batch first, like every other discriminator output
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            feats.append(x.view(B, p, *x.shape[1:]))
        x = self.out(x)
        feats.append(x.view(B, p, *x.shape[1:]))
        return x.reshape(B, -1), feats


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, list(cfg.mpd_channels)) for p in cfg.periods)

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], Features]:
        """wav (B, S) -> (one (B, N_i) logit tensor per period, features per period)."""
        outs = [d(wav) for d in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]


def magnitude(wav: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    """wav (B, S) -> linear STFT magnitude (B, n_fft // 2 + 1, frames), Hann window, centred."""
    window = torch.hann_window(win, device=wav.device, dtype=wav.dtype)
    spec = torch.stft(wav, n_fft, hop, win, window=window, center=True, return_complex=True)
    return spec.abs()


class ResolutionDiscriminator(nn.Module):
    """2-D convolutions over one STFT magnitude (time x frequency): sees spectral texture at one resolution."""

    def __init__(self, resolution: list[int], channels: int):
        super().__init__()
        self.resolution = tuple(resolution)
        c = channels
        # strided from the first layer on (as in Vocos): full-resolution 2-D convolutions over a
        # 1025-bin spectrogram were 3/4 of a CPU training step
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(1, c, (7, 5), (2, 2), padding=(3, 2))),
            weight_norm(nn.Conv2d(c, c, (5, 3), (2, 1), padding=(2, 1))),
            weight_norm(nn.Conv2d(c, c, (5, 3), (2, 2), padding=(2, 1))),
            weight_norm(nn.Conv2d(c, c, 3, (2, 1), padding=1)),
            weight_norm(nn.Conv2d(c, c, 3, padding=1)),
        ])
        self.out = weight_norm(nn.Conv2d(c, 1, 3, padding=1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """wav (B, S) -> (logits (B, N), features)."""
        n_fft, hop, win = self.resolution
        # the magnitude is compressed (sqrt-like power) so loud low bins do not swamp the convolutions
        x = magnitude(wav, n_fft, hop, win).clamp(min=1e-5).pow(0.3).unsqueeze(1)  # (B, 1, F, frames)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            feats.append(x)
        x = self.out(x)
        feats.append(x)
        return x.flatten(1), feats


class MultiResolutionDiscriminator(nn.Module):
    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.discriminators = nn.ModuleList(ResolutionDiscriminator(list(r), cfg.mrd_channels) for r in cfg.resolutions)

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], Features]:
        """wav (B, S) -> (one (B, N_i) logit tensor per resolution, features per resolution)."""
        outs = [d(wav) for d in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]
