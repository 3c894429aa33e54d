"""A pool of worker processes for CPU-bound stages (prepare's audio stage), safe around torch.

Workers fork from a forkserver that has imported the stage's modules (torch, librosa) once, instead
of forking a parent whose torch thread pool may be running (unsafe) or spawning fresh interpreters
(seconds of imports each). Each worker runs one torch thread and exits when the parent is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _init_worker(main_pid: int) -> None:
    # Two worker processes on two cores: intra-op threads would only oversubscribe them.
    import threading

    import torch

    torch.set_num_threads(1)
    # If the main process is killed (SIGKILL, OOM), ProcessPoolExecutor's workers wait
    # forever on a queue whose write end they hold themselves, and keep the forkserver
    # alive too. Exit when the main process is gone.
    threading.Thread(target=_exit_when_gone, args=(main_pid,), daemon=True).start()


def _exit_when_gone(pid: int, interval: float = 1.0) -> None:
    while True:
        time.sleep(interval)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # alive, owned by someone else: cannot happen for our parent
            pass


def main_is_importable() -> bool:
    """Worker processes re-import ``__main__`` from its file; code fed through stdin has none."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return path is None or os.path.isfile(path)


def run_chunks(task: Callable[[list], list[R]], chunks: Sequence[list], workers: int, preload: list[str],
               on_result: Callable[[list[R]], None], meanwhile: Callable[[], T] = lambda: None) -> T:
    """``task(chunk)`` for every chunk in ``workers`` processes; ``on_result`` gets each chunk's results in
    this process as they complete. ``meanwhile`` runs here while the forkserver starts (it spends seconds
    importing ``preload`` on one core: use the other); its return value is returned.

    An exception (in a task, ``meanwhile`` or ``on_result``, or Ctrl-C) cancels the queued chunks and is
    raised now, not after they finish.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(preload)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(task, c) for c in chunks]
        try:
            side = meanwhile()
            for fut in as_completed(futures):
                on_result(fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return side
