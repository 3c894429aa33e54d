"""PNG plots of training: loss curves, mel spectrograms, alignments. Pure: arrays in, file out."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from voicetrain.fileio import atomic_path  # noqa: E402


def plot_losses(rows: list[dict], path: str | os.PathLike, key: str = "loss") -> None:
    """Train and validation ``key`` against step (log scale), from metrics rows."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for split, style in (("train", "-"), ("val", "o-")):
        pts = [(r["step"], r[f"{split}/{key}"]) for r in rows if r.get(f"{split}/{key}") not in (None, "")]
        if pts:
            s, v = zip(*pts)
            ax.plot(s, v, style, label=f"{split} {key}", markersize=3, alpha=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def mel_alignment_figure(mel_pred: np.ndarray, mel_true: np.ndarray | None, attention: np.ndarray | None):
    """Figure with predicted mel, target mel and the alignment (text x frames)."""
    n = 1 + (mel_true is not None) + (attention is not None)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.2 * n))
    axes = np.atleast_1d(axes)
    i = 0
    axes[i].imshow(mel_pred, origin="lower", aspect="auto", interpolation="none")
    axes[i].set_title("predicted mel")
    if mel_true is not None:
        i += 1
        axes[i].imshow(mel_true, origin="lower", aspect="auto", interpolation="none")
        axes[i].set_title("target mel")
    if attention is not None:
        i += 1
        axes[i].imshow(attention.T, origin="lower", aspect="auto", interpolation="none")
        axes[i].set_title("alignment (tokens x frames)")
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 80) -> None:
    with atomic_path(path, suffix=Path(path).suffix) as tmp:  # the suffix names the format
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)


def figure_to_array(fig) -> np.ndarray:
    """RGB uint8 (H, W, 3) for TensorBoard."""
    fig.canvas.draw()
    arr = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    return arr
