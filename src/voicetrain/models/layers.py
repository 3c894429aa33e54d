"""Building blocks shared by the acoustic models. Shapes are documented per forward."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sequence_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool, True at valid positions."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """(length, dim) sinusoidal position encoding (computed, not cached: no global state)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        assert dim % heads == 0, "hidden size must be divisible by the number of heads"
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, D), mask (B, N) bool valid -> (B, N, D)."""
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, N, D))


class FFTBlock(nn.Module):
    """Feed-forward Transformer block (FastSpeech): self-attention, then a 1-D conv feed-forward."""

    def __init__(self, dim: int, heads: int, ff_dim: int, kernel: int, dropout: float):
        super().__init__()
        self.attn = MultiHeadSelfAttention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.conv1 = nn.Conv1d(dim, ff_dim, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(ff_dim, dim, 1)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, D), mask (B, N) -> (B, N, D); padded positions are zeroed."""
        m = mask.unsqueeze(-1).to(x.dtype)
        x = self.norm1(x + self.drop(self.attn(x, mask))) * m
        y = self.conv2(F.relu(self.conv1(x.transpose(1, 2)))).transpose(1, 2)
        return self.norm2(x + self.drop(y)) * m


class FFTStack(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, ff_dim: int, kernel: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(FFTBlock(dim, heads, ff_dim, kernel, dropout) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, D), mask (B, N) -> (B, N, D); adds sinusoidal positions first."""
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device)
        for block in self.blocks:
            x = block(x, mask)
        return x


class ConvNeXtBlock(nn.Module):
    """Depthwise conv + pointwise MLP with a residual (ConvNeXt, as in Vocos).

    About 5x fewer multiply-adds per frame than an FFT block at the same width and no
    T x T attention matrix, so a mel decoder built from these trains faster and in less
    memory on a CPU; local context is all a decoder needs once durations are known.
    """

    def __init__(self, dim: int, kernel: int, expansion: int, dropout: float, dilation: int = 1):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, expansion * dim)
        self.pw2 = nn.Linear(expansion * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, D), mask (B, N) -> (B, N, D); padded positions are zeroed."""
        m = mask.unsqueeze(-1).to(x.dtype)
        y = self.dwconv((x * m).transpose(1, 2)).transpose(1, 2)
        y = self.pw2(F.gelu(self.pw1(self.norm(y))))
        return (x + self.drop(y)) * m


class ConvStack(nn.Module):
    """ConvNeXt blocks with dilations cycling 1, 2, 4 (receptive field grows without cost)."""

    def __init__(self, dim: int, layers: int, kernel: int, expansion: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, kernel, expansion, dropout, dilation=2 ** (i % 3))
                                    for i in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, D), mask (B, N) -> (B, N, D)."""
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x) * mask.unsqueeze(-1).to(x.dtype)


class VariancePredictor(nn.Module):
    """Two conv layers + linear: predicts one value per input position (FastSpeech 2)."""

    def __init__(self, dim: int, filters: int, kernel: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(dim, filters, kernel, padding=kernel // 2)
        self.norm1 = nn.LayerNorm(filters)
        self.conv2 = nn.Conv1d(filters, filters, kernel, padding=kernel // 2)
        self.norm2 = nn.LayerNorm(filters)
        self.proj = nn.Linear(filters, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, D), mask (B, N) -> (B, N), zero at padding."""
        y = F.relu(self.conv1(x.transpose(1, 2))).transpose(1, 2)
        y = self.drop(self.norm1(y))
        y = F.relu(self.conv2(y.transpose(1, 2))).transpose(1, 2)
        y = self.drop(self.norm2(y))
        return self.proj(y).squeeze(-1) * mask.to(y.dtype)


def regulate_length(x: torch.Tensor, durations: torch.Tensor, max_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat each token's vector by its integer duration.

    x (B, L, D), durations (B, L) long -> (B, T, D) and frame lengths (B,).
    Implemented as a gather over cumulative durations so it is batched and exportable.
    """
    durations = durations.clamp(min=0).long()
    lens = durations.sum(1)
    T = int(lens.max().clamp(min=1)) if max_frames is None else max_frames
    cum = torch.cumsum(durations, dim=1)  # (B, L)
    frames = torch.arange(T, device=x.device)[None, :].expand(x.shape[0], T).contiguous()  # (B, T)
    idx = torch.searchsorted(cum, frames, right=True).clamp(max=x.shape[1] - 1)  # token index per frame
    out = torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))
    valid = frames < lens[:, None]
    return out * valid.unsqueeze(-1).to(x.dtype), lens


def average_by_duration(values: torch.Tensor, weights: torch.Tensor, durations: torch.Tensor) -> torch.Tensor:
    """Mean of frame values within each token's span, counting only frames with weight 1.

    values, weights (B, T); durations (B, L) -> (B, L); 0 for tokens with no weighted frame.
    """
    B, T = values.shape
    cum = torch.cumsum(durations, dim=1)
    start = cum - durations
    frames = torch.arange(T, device=values.device)[None, None, :]
    span = ((frames >= start[:, :, None]) & (frames < cum[:, :, None])).to(values.dtype)  # (B, L, T)
    w = span * weights[:, None, :].to(values.dtype)
    total = w.sum(-1)
    return torch.where(total > 0, (w * values[:, None, :]).sum(-1) / total.clamp(min=1e-6), torch.zeros_like(total))
