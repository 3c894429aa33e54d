"""Crash-safe checkpoint files and pickle-free loading.

Lightning writes checkpoints in place; a SIGKILL mid-write would leave a file that
fails to load. Here every checkpoint is written by voicetrain.fileio (temp file in the
same folder, fsync, rename, fsync the folder), so a reader sees the old file or the new
one. Loading uses ``torch.load(weights_only=True)``: no pickle code execution.

Only ``last.ckpt`` carries what a resume needs besides the weights: the optimizer and scheduler state
and the live (not averaged) weights, about three quarters of a checkpoint. Every other checkpoint
(``step=N``, ``best-step=N``, ``quality-step=N``, ``time=Mmin``) is *lean*: the averaged weights that
synthesis uses, the payload and the loop position. A 15-minute run folder measured 109 MB (BENCHMARKS.md).
last.ckpt is written atomically, so a kill never leaves the run without a resumable checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO

from voicetrain.fileio import atomic_path
from voicetrain.inference.checkpoint import load_checkpoint_safe


RESUMABLE = "last.ckpt"
TRAINING_STATE = ("optimizer_states", "lr_schedulers", "current_model_state", "averaging_state")
"""What only a resume needs (Lightning's and its WeightAveraging's keys): kept in ``last.ckpt`` alone."""


def is_resumable(checkpoint: dict[str, Any]) -> bool:
    return "optimizer_states" in checkpoint


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
    left a full periodic checkpoint newer than it (then that one; lean ones cannot resume: see the module)."""
    from voicetrain.inference.checkpoint import checkpoint_step

    d = Path(ckpt_dir)
    last = d / "last.ckpt"
    if not last.exists():
        return None
    last_step = int(load_checkpoint_safe(last).get("global_step", 0))
    newer = sorted((p for p in d.glob("step=*.ckpt") if checkpoint_step(p) > last_step), key=checkpoint_step)
    for p in reversed(newer):
        if is_resumable(load_checkpoint_safe(p)):
            return p
    return last


class AtomicCheckpointIO(CheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        if Path(path).name != RESUMABLE:
            checkpoint = {k: v for k, v in checkpoint.items() if k not in TRAINING_STATE}
        save_checkpoint_atomic(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint_safe(path, map_location or "cpu")

    def remove_checkpoint(self, path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
