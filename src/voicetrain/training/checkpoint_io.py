"""Crash-safe checkpoint files and pickle-free loading.

Lightning writes checkpoints in place; a SIGKILL mid-write would leave a file that
fails to load. Here every checkpoint goes to a temp file in the same folder, is
fsynced and then renamed over the target, so a reader sees the old file or the new
one. Loading uses ``torch.load(weights_only=True)``: no pickle code execution.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO

from voicetrain.config import make_temp_file
from voicetrain.inference.checkpoint import load_checkpoint_safe


def save_checkpoint_atomic(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    fd, tmp = make_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
