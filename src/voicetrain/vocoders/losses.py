"""Vocoder training losses: pure functions of waveforms, discriminator logits and features.

* log-mel L1 (HiFi-GAN, Vocos): the perceptual backbone of the loss, on the very
  mel the acoustic model predicts;
* multi-resolution STFT (Parallel WaveGAN): spectral convergence + log-magnitude L1
  at three resolutions. Our mels stop at ``AudioConfig.f_max`` (8 kHz), so without it
  nothing but the discriminators would supervise 8-11 kHz;
* hinge adversarial losses (Vocos) and feature matching (MelGAN, HiFi-GAN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from voicetrain.vocoders.discriminators import magnitude


def mel_l1(log_mel_fake: torch.Tensor, log_mel_real: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of two log-mels of the same shape (B, n_mels, T)."""
    return F.l1_loss(log_mel_fake, log_mel_real)


def stft_loss(fake: torch.Tensor, real: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    """Spectral convergence + log-magnitude L1 of two waves (B, S) at one resolution."""
    mf = magnitude(fake, n_fft, hop, win).clamp(min=1e-5)
    mr = magnitude(real, n_fft, hop, win).clamp(min=1e-5)
    sc = torch.linalg.vector_norm(mr - mf) / torch.linalg.vector_norm(mr).clamp(min=1e-5)
    return sc + F.l1_loss(torch.log(mf), torch.log(mr))


def multi_resolution_stft_loss(fake: torch.Tensor, real: torch.Tensor, resolutions) -> torch.Tensor:
    """Mean of :func:`stft_loss` over ``resolutions`` [(n_fft, hop, win), ...]."""
    return sum(stft_loss(fake, real, *r) for r in resolutions) / len(resolutions)


def discriminator_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Hinge loss, summed over sub-discriminators: real pushed above +1, generated below -1."""
    return sum(torch.mean(F.relu(1 - r)) + torch.mean(F.relu(1 + f)) for r, f in zip(real_logits, fake_logits))


def generator_adversarial_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Hinge generator loss, summed over sub-discriminators."""
    return sum(torch.mean(F.relu(1 - f)) for f in fake_logits)


def feature_matching_loss(real_feats: list[list[torch.Tensor]], fake_feats: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between discriminator activations on real and generated audio, mean per layer, summed.

    Real features are targets: pass them detached (computed under no_grad).
    """
    total = 0.0
    for rs, fs in zip(real_feats, fake_feats):
        for r, f in zip(rs, fs):
            total = total + F.l1_loss(f, r)
    return total
