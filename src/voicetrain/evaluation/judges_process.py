"""The evaluation models in a child process: a training run's quality judges without their memory.

Whisper (CTranslate2) and the speaker encoder add ~280 MB to the process that loads them (measured
on this machine: 424 MB after the training imports, 707 MB with both loaded). A training run that
scores its voice at every validation (training/quality.py) would carry them for its whole life and
count them in its peak; :class:`JudgesProcess` keeps them in a child instead (``spawn``: a fresh
interpreter that imports only :mod:`voicetrain.evaluation.models`) and forwards each call to it.

Calls are synchronous and in order, so the scores are the same as in-process ones. The child ends
when :meth:`JudgesProcess.close` is called, when this process exits, or when this process dies: its
end of the pipe closes, and the child's read fails.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

JUDGES = ("whisper", "speaker_encoder", "dnsmos", "pocketsphinx")
"""The Evaluator's models the child serves (attribute paths start with one of these)."""


class JudgeError(RuntimeError):
    """A call failed in the child; the message carries the child's exception."""


def _serve(conn, evaluator_kwargs: dict[str, Any]) -> None:
    from voicetrain.evaluation.models import Evaluator

    ev = Evaluator(**evaluator_kwargs)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if msg is None:
            return
        path, args, kwargs = msg
        try:
            target: Any = ev
            for part in path.split("."):
                target = getattr(target, part)
            conn.send((True, target(*args, **kwargs)))
        except Exception as e:  # noqa: BLE001 - reported to the caller, the child goes on serving
            conn.send((False, f"{type(e).__name__}: {e}"))


class _Remote:
    """An attribute path on the child's Evaluator; calling it runs the call there."""

    def __init__(self, owner: "JudgesProcess", path: str):
        self._owner, self._path = owner, path

    def __getattr__(self, name: str) -> "_Remote":
        if name.startswith("_"):
            raise AttributeError(name)
        return _Remote(self._owner, f"{self._path}.{name}")

    def __call__(self, *args, **kwargs):
        return self._owner.call(self._path, *args, **kwargs)


class JudgesProcess:
    """Stands in for an :class:`~voicetrain.evaluation.models.Evaluator` (``whisper``, ``speaker_encoder``,
    ``dnsmos``, ``pocketsphinx``) whose models live in a child process. ``evaluator_kwargs`` build the child's
    Evaluator."""

    def __init__(self, **evaluator_kwargs):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, evaluator_kwargs), daemon=True,
                                 name="voicetrain-judges")
        self._proc.start()
        child.close()  # only the child holds its end: the child sees EOF when this process dies

    def call(self, path: str, *args, **kwargs):
        if path.split(".")[0] not in JUDGES:
            raise AttributeError(f"the judges process serves {', '.join(JUDGES)}, not {path!r}")
        try:
            self._conn.send((path, args, kwargs))
            ok, value = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError) as e:
            code = self._proc.exitcode
            raise JudgeError(f"the judges process ended (exit code {code}) during {path}: {e}") from e
        if not ok:
            raise JudgeError(f"{path}: {value}")
        return value

    def __getattr__(self, name: str) -> _Remote:
        # only called for names the object lacks: the judges (``whisper``, ``speaker_encoder``, ...)
        if name in JUDGES:
            return _Remote(self, name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r} (it serves {', '.join(JUDGES)})")

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(None)
            except (OSError, BrokenPipeError):
                pass
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout=5)
        self._conn.close()
