"""Crash-safe checkpoint files and pickle-free loading.

Lightning writes checkpoints in place; a SIGKILL mid-write would leave a file that
fails to load. Here every checkpoint is written by voicetrain.fileio (temp file in the
same folder, fsync, rename, fsync the folder), so a reader sees the old file or the new
one. Loading uses ``torch.load(weights_only=True)``: no pickle code execution.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO

from voicetrain.fileio import atomic_path
from voicetrain.inference.checkpoint import load_checkpoint_safe


def save_checkpoint_atomic(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def remove_stale_temp_files(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Delete ``.NAME.XXXX.tmp`` files a killed save left in ``ckpt_dir``; return them.

    Only one training process writes a run folder, so at the start of training every such file
    is a leftover: the save it belonged to never reached its rename.
    """
    d = Path(ckpt_dir)
    stale = sorted(d.glob(".*.tmp")) if d.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def newest_resumable(ckpt_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: last.ckpt, unless a kill between saving step=N.ckpt and last.ckpt
    left a periodic checkpoint newer than it (then that one)."""
    from voicetrain.inference.checkpoint import checkpoint_step

    d = Path(ckpt_dir)
    last = d / "last.ckpt"
    if not last.exists():
        return None
    last_step = int(load_checkpoint_safe(last).get("global_step", 0))
    newer = [p for p in d.glob("step=*.ckpt") if checkpoint_step(p) > last_step]
    return max(newer, key=checkpoint_step) if newer else last


class AtomicCheckpointIO(CheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        save_checkpoint_atomic(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint_safe(path, map_location or "cpu")

    def remove_checkpoint(self, path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
