"""Vocos (Siuzdak, 2023): a ConvNeXt backbone predicts STFT magnitude and phase; an inverse STFT makes the wave.

Why this shape on a CPU: every layer runs at the *frame* rate (86 frames/s at
22.05 kHz, hop 256), not at the sample rate like HiFi-GAN's transposed-convolution
upsampler, and the last step is one ``torch.istft`` whose FFTs are cheap. The
backbone is fully convolutional with per-frame LayerNorm (no attention, no
recurrence), so cost and memory grow linearly with the mel length and an utterance
of any length is one call. Sizes were chosen by measured one-thread speed (see
ARCHITECTURE.md, "why Vocos").

Frame grid: the features use ``torch.stft(center=True)``, so mel frame ``i`` is
centred on sample ``i * hop``; the head inverts with ``torch.istft(center=True)`` on
the same grid, and the output has ``T * hop`` samples for ``T`` frames (the last
hop is the right half of frame ``T - 1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from voicetrain.config import AT_LEAST_0, POSITIVE, WEIGHT, AudioConfig, check_ranges, finite
from voicetrain.vocoders.base import Vocoder


@dataclass(frozen=True)
class VocosConfig:
    """Generator hyperparameters. The default is the CPU preset; see :data:`PRESETS`."""

    dim: int = 160
    """Channels of the backbone. 160 x 8 blocks is the largest size measured at RTF <= 0.01 on one thread
    for a 1 s utterance (192 was 0.0104; ARCHITECTURE.md, "why Vocos")."""
    intermediate_dim: int = 480
    """Channels inside each ConvNeXt block's pointwise feed-forward (3x ``dim``, as in ConvNeXt)."""
    layers: int = 8
    """ConvNeXt blocks. Receptive field: input_kernel + layers * (kernel - 1) frames."""
    kernel: int = 7
    """Depthwise convolution kernel (frames)."""
    input_kernel: int = 7
    """Kernel of the mel -> ``dim`` input convolution."""
    layer_scale_init: float = 0.0
    """Initial per-channel residual scale of each block; 0 means 1 / layers (Vocos' default)."""
    max_log_magnitude: float = math.log(100.0)
    """Predicted log-magnitudes are clipped here before exp: an untrained or diverging network
    must not produce inf audio (Vocos clips the magnitude at 1e2)."""

    def __post_init__(self) -> None:
        check_ranges(self, "model_config", {
            **dict.fromkeys(("dim", "intermediate_dim", "kernel", "input_kernel"), POSITIVE),
            "layers": AT_LEAST_0, "layer_scale_init": WEIGHT,
            "max_log_magnitude": (lambda v: finite(v), "a finite number"),
        })


PRESETS: dict[str, VocosConfig] = {
    "tiny": VocosConfig(dim=16, intermediate_dim=32, layers=1),
    "cpu": VocosConfig(),
    "gpu": VocosConfig(dim=512, intermediate_dim=1536, layers=8),  # Vocos' published size
}


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> LayerNorm -> pointwise MLP (GELU) -> layer scale, residual. x (B, C, T) -> (B, C, T)."""

    def __init__(self, dim: int, intermediate_dim: int, kernel: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)  # (B, T, C): LayerNorm and Linear act on the last axis
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


def spectrum_from_head(head_out: torch.Tensor, max_log_magnitude: float) -> torch.Tensor:
    """(B, n_fft + 2, T) head output -> complex STFT (B, n_fft // 2 + 1, T).

    The first half is a log-magnitude, the second a phase angle; cos/sin of the angle
    keeps the phase on the unit circle whatever the network outputs (Vocos' trick:
    no wrapping problem, no phase loss needed).
    """
    # float32 from here on, also under bf16 autocast: complex bf16 does not exist, and the inverse STFT's
    # overlap-add needs the precision
    log_mag, phase = head_out.float().chunk(2, dim=1)
    mag = torch.exp(torch.clamp(log_mag, max=max_log_magnitude))
    return torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))


class Vocos(Vocoder):
    """Natural-log mel (B, n_mels, T), un-normalized -> waveform (B, T * hop_length)."""

    name = "vocos"

    def __init__(self, cfg: VocosConfig, audio: AudioConfig):
        super().__init__()
        self.cfg = cfg
        self.audio = audio
        self.embed = nn.Conv1d(audio.n_mels, cfg.dim, cfg.input_kernel, padding=cfg.input_kernel // 2)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        scale = cfg.layer_scale_init or 1.0 / max(cfg.layers, 1)
        self.blocks = nn.ModuleList(ConvNeXtBlock(cfg.dim, cfg.intermediate_dim, cfg.kernel, scale)
                                    for _ in range(cfg.layers))
        self.final_norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, audio.n_fft + 2)
        self.register_buffer("window", torch.hann_window(audio.win_length), persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        # ConvNeXt's truncated-normal init: keeps early outputs small and the first steps stable
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    @property
    def receptive_field(self) -> int:
        """Frames of input that one output frame depends on."""
        return self.cfg.input_kernel + self.cfg.layers * (self.cfg.kernel - 1)

    def head_output(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, n_mels, T) -> (B, n_fft + 2, T): log-magnitudes, then phases (see :func:`spectrum_from_head`).

        Real-valued, so an ONNX export (which has no complex tensors) can start from here."""
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2)

    def spectrum(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, n_mels, T) -> complex STFT (B, n_fft // 2 + 1, T)."""
        return spectrum_from_head(self.head_output(mel), self.cfg.max_log_magnitude)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, n_mels, T) natural-log magnitudes -> wav (B, T * hop_length)."""
        a = self.audio
        spec = self.spectrum(mel)
        return torch.istft(spec, a.n_fft, a.hop_length, a.win_length, window=self.window, center=True,
                           length=mel.shape[-1] * a.hop_length)
