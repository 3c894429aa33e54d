"""Text-to-mel alignment: learned attention (Badlani et al., 2021, "One TTS Alignment To Rule Them All"),
or Glow-TTS's search against per-token Gaussian means (:func:`gaussian_log_likelihood`).

Soft attention between text embeddings and mel frames, biased by a beta-binomial
prior so that it starts near the diagonal; hard durations come from monotonic
alignment search (the ``monotonic-alignment-search`` package) over the soft
attention. Trained with the forward-sum (CTC) loss and, once it has formed, the
binarization loss that pulls the soft attention towards the hard path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def beta_binomial_log_prior(text_lens: torch.Tensor, mel_lens: torch.Tensor, L: int, T: int,
                            scaling: float = 1.0) -> torch.Tensor:
    """(B, T, L) log prior: for frame t, a beta-binomial over text positions centred on t/T.

    Computed with lgamma in torch per batch: exact, vectorized, no table cache.
    """
    dev = text_lens.device
    n = (text_lens - 1).clamp(min=0).to(torch.float32)[:, None, None]  # (B,1,1)
    k = torch.arange(L, device=dev, dtype=torch.float32)[None, None, :]  # (1,1,L)
    t = torch.arange(1, T + 1, device=dev, dtype=torch.float32)[None, :, None]  # (1,T,1)
    Tb = mel_lens.to(torch.float32)[:, None, None]
    a = scaling * t
    b = scaling * (Tb + 1 - t).clamp(min=1e-3)

    def lbeta(x, y):
        return torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)

    kk = torch.minimum(k, n)
    logp = (torch.lgamma(n + 1) - torch.lgamma(kk + 1) - torch.lgamma(n - kk + 1)
            + lbeta(kk + a, n - kk + b) - lbeta(a, b))
    valid = (k <= n) & (t <= Tb)
    return torch.where(valid, logp, torch.full_like(logp, -1e4))


class AlignmentEncoder(nn.Module):
    """Projects text embeddings (keys) and mel frames (queries) and scores their distance."""

    def __init__(self, n_mels: int, text_dim: int, att_dim: int = 80, temperature: float = 0.0005):
        super().__init__()
        self.temperature = temperature
        self.key_proj = nn.Sequential(
            nn.Conv1d(text_dim, 2 * text_dim, 3, padding=1), nn.ReLU(), nn.Conv1d(2 * text_dim, att_dim, 1))
        self.query_proj = nn.Sequential(
            nn.Conv1d(n_mels, 2 * n_mels, 3, padding=1), nn.ReLU(), nn.Conv1d(2 * n_mels, n_mels, 1), nn.ReLU(),
            nn.Conv1d(n_mels, att_dim, 1))

    def forward(self, mels: torch.Tensor, text_emb: torch.Tensor, text_mask: torch.Tensor,
                log_prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mels (B, M, T), text_emb (B, D, L), text_mask (B, L) bool, log_prior (B, T, L).

        Returns (soft attention (B, T, L) with prior, attention log-probabilities (B, T, L) without it).
        """
        q = self.query_proj(mels)  # (B, A, T)
        k = self.key_proj(text_emb)  # (B, A, L)
        # ||q - k||^2 via the expansion: avoids a (B, A, T, L) tensor
        dist = (q.pow(2).sum(1)[:, :, None] + k.pow(2).sum(1)[:, None, :]
                - 2 * torch.bmm(q.transpose(1, 2), k))  # (B, T, L)
        logits = -self.temperature * dist
        logits = logits.masked_fill(~text_mask[:, None, :], -1e4)
        logprob = F.log_softmax(logits, dim=-1)
        soft = F.softmax(logprob + log_prior, dim=-1).masked_fill(~text_mask[:, None, :], 0.0)
        return soft, logprob


def hard_alignment(soft: torch.Tensor, text_lens: torch.Tensor, mel_lens: torch.Tensor) -> torch.Tensor:
    """Monotonic alignment search over log soft attention: (B, T, L) -> (B, T, L) 0/1 path."""
    return monotonic_path(torch.log(soft.detach().float().clamp(min=1e-8)), text_lens, mel_lens)


def monotonic_path(score: torch.Tensor, text_lens: torch.Tensor, mel_lens: torch.Tensor) -> torch.Tensor:
    """The monotonic path of highest total ``score`` (B, T, L) -> (B, T, L) 0/1, each frame on one token."""
    from monotonic_alignment_search import maximum_path

    B, T, L = score.shape
    mask = (torch.arange(L)[None, :, None] < text_lens.cpu()[:, None, None]) & \
           (torch.arange(T)[None, None, :] < mel_lens.cpu()[:, None, None])  # (B, L, T)
    value = score.detach().float().cpu().transpose(1, 2)  # (B, L, T)
    path = maximum_path(value.contiguous(), mask.float(), implementation="cython")
    return path.transpose(1, 2).to(score.device, score.dtype)


def gaussian_log_likelihood(mels: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """(B, T, L) log-likelihood of each frame of ``mels`` (B, M, T) under a unit-variance Gaussian at each
    token's mean ``means`` (B, L, M), constants dropped: Glow-TTS's alignment score.

    In float32 whatever the autocast: MAS compares sums over hundreds of frames, which bf16 would blur."""
    with torch.autocast(mels.device.type, enabled=False):
        x, mu = mels.float(), means.float()
        dist = (x.pow(2).sum(1)[:, :, None] + mu.pow(2).sum(2)[:, None, :]
                - 2 * torch.bmm(x.transpose(1, 2), mu.transpose(1, 2)))  # (B, T, L), no (B, T, L, M) tensor
    return -0.5 * dist


def forward_sum_loss(logprob: torch.Tensor, log_prior: torch.Tensor, text_lens: torch.Tensor,
                     mel_lens: torch.Tensor, blank_logprob: float = -1.0) -> torch.Tensor:
    """CTC over all monotonic paths through the attention (sums, not maxes, path probabilities).

    logprob, log_prior (B, T, L). Batched: padded text columns are masked before the
    softmax, so each item's CTC only sees its own tokens plus the blank.
    """
    B, T, L = logprob.shape
    attn = logprob + log_prior  # the prior also guides the loss early on (as in NeMo's FastPitch)
    text_mask = torch.arange(L, device=attn.device)[None, :] < text_lens[:, None]
    attn = attn.masked_fill(~text_mask[:, None, :], -1e4)
    attn = F.pad(attn, (1, 0), value=blank_logprob)  # blank at index 0
    logp = F.log_softmax(attn, dim=-1).transpose(0, 1)  # (T, B, L+1)
    targets = torch.arange(1, L + 1, device=attn.device)[None, :].expand(B, L)
    loss = F.ctc_loss(logp.float(), targets, mel_lens, text_lens, blank=0, reduction="none", zero_infinity=True)
    return (loss / text_lens.clamp(min=1)).mean()


def bin_loss(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Pulls the soft attention towards the hard monotonic path."""
    on = hard == 1
    return -torch.log(soft[on].clamp(min=1e-12)).sum() / on.sum().clamp(min=1)
