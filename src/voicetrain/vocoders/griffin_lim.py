"""Fast Griffin-Lim (Perraudin et al., 2013: momentum 0.99) on torch.stft, from log-mels.

The mel-to-linear step uses the filterbank's pseudo-inverse (clamped at zero),
then magnitudes are sharpened by ``power`` before phase reconstruction, which
reduces the "phasy" smear Griffin-Lim leaves on over-smoothed spectra.
"""

from __future__ import annotations

import torch

from voicetrain.audio.features import mel_filterbank
from voicetrain.config import AudioConfig
from voicetrain.vocoders.base import Vocoder


class GriffinLim(Vocoder):
    name = "griffin-lim"

    def __init__(self, cfg: AudioConfig, n_iter: int = 32, momentum: float = 0.99, power: float = 1.2):
        super().__init__()
        if not isinstance(n_iter, int) or isinstance(n_iter, bool) or n_iter < 1:
            raise ValueError(f"Griffin-Lim iterations (--gl-iters) must be an integer >= 1, got {n_iter!r}")
        self.cfg = cfg
        self.n_iter = n_iter
        self.momentum = momentum
        self.power = power
        fb = mel_filterbank(cfg)
        self.register_buffer("inv_fb", torch.linalg.pinv(fb), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)

    def _stft(self, wav: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return torch.stft(wav, c.n_fft, c.hop_length, c.win_length, window=self.window, center=True,
                          return_complex=True)

    def _istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        c = self.cfg
        return torch.istft(spec, c.n_fft, c.hop_length, c.win_length, window=self.window, center=True,
                           length=length)

    @torch.no_grad()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, n_mels, T) natural-log magnitudes -> wav (B, T * hop_length), as every vocoder returns.

        With centred frames, frame t covers samples around t * hop; the last hop is the right half of
        frame T - 1 (as in Vocos), so T frames give T * hop samples.
        """
        length = mel.shape[-1] * self.cfg.hop_length
        # reflect padding in stft needs at least n_fft // 2 samples: pad very short mels with silence
        min_frames = self.cfg.n_fft // self.cfg.hop_length + 2
        if mel.shape[-1] < min_frames:
            mel = torch.nn.functional.pad(mel, (0, min_frames - mel.shape[-1]), value=float(torch.log(torch.tensor(1e-5))))
        out_len = length
        length = mel.shape[-1] * self.cfg.hop_length
        mag = torch.clamp(self.inv_fb @ torch.exp(mel), min=0.0) ** self.power  # (B, F, T)
        gen = torch.Generator().manual_seed(0)  # fixed initial phase: same mel -> same audio
        angles = torch.exp(2j * torch.pi * torch.rand(mag.shape, generator=gen)).to(mag.device)
        prev = torch.zeros_like(angles)
        for _ in range(self.n_iter):
            wav = self._istft(mag * angles, length)
            rebuilt = self._stft(wav)[..., : mag.shape[-1]]  # T * hop samples give T + 1 centred frames
            angles = rebuilt - (self.momentum / (1 + self.momentum)) * prev
            angles = angles / (angles.abs() + 1e-8)
            prev = rebuilt
        return self._istft(mag * angles, length)[..., : max(out_len, 1)]
