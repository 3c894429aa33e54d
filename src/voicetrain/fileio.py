"""The one way voicetrain writes a file, and the one file hash.

Every file goes to a temp file in its target's folder (``.NAME.XXXXXXXX.tmp``; the same
file system, so the rename is atomic), is fsynced, renamed over the target, and the
folder is fsynced so the rename itself survives a power cut. A reader, or a run
restarted after SIGKILL, sees the old file or the new one, never half of one; a
killed write leaves only its temp file, which the next write never reuses. The lowest
layer of the package: it imports nothing from voicetrain.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask_mode() -> int:
    """0o666 minus the process umask, read without changing it (os.umask would race with threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o644


def _fsync(path: str | os.PathLike, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path beside ``path`` for a writer that wants a file name (soundfile, torch.save,
    safetensors, ONNX); when the block ends, fsync it, rename it over ``path`` and fsync the folder.
    If the block raises, the temp file is deleted and ``path`` is untouched. ``suffix`` keeps an
    extension a writer infers the format from (``.wav``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, _umask_mode())  # mkstemp's 0600 would make outputs unreadable to other users
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())  # a writer that recreates the file (safetensors) gets mkstemp's 0600 back
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1, sort_keys: bool = False) -> None:
    """UTF-8 JSON (non-ASCII kept as is) ending in a newline."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=sort_keys) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
