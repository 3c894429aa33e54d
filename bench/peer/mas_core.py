"""Stand-in for piper-tts 1.8.0's missing ``piper.train.vits.monotonic_align.monotonic_align.core``.

The piper-tts wheel ships ``monotonic_align/setup.py`` but not the ``core.pyx`` it compiles, so
``python -m piper.train`` fails at import. ``setup_piper_venv.sh`` copies this file there as
``core.py``. It exposes Piper's ``maximum_path_c`` on top of PyPI's ``monotonic-alignment-search``
(the compiled glow-tts kernel voicetrain already depends on), so the peer's venv needs no C
compiler.

The two kernels are the same dynamic programme with the axes swapped: Piper's takes values
``[b, t_t, t_s]`` (spectrogram frames first) with lengths ``(t_ts, t_ss)``; glow-tts' takes
``[b, t_x, t_y]`` (text first) with lengths ``(t_xs, t_ys)``. So: transpose, run, transpose back.
Piper's kernel adds a ``y > 0`` guard in the backtrack because its layout reads ``value[-1, x]``
(before the buffer) at y == 0; in glow-tts' layout the same read is ``value[x, -1]``, inside the
buffer, and the loop ends there anyway, so the paths agree.
"""

from __future__ import annotations

import numpy as np
from monotonic_alignment_search.core import maximum_path_c as _glow_tts_maximum_path_c


def maximum_path_c(paths: np.ndarray, values: np.ndarray, t_ys: np.ndarray, t_xs: np.ndarray) -> None:
    """Fill ``paths`` in place with the most likely monotonic alignment (Piper's signature).

    paths: int32 [b, t_t, t_s], zeros on entry; values: float32 [b, t_t, t_s] (log-likelihoods,
    used as scratch as in the Cython original); t_ys: int32 [b] frame counts; t_xs: int32 [b]
    phoneme counts.
    """
    values_t = np.ascontiguousarray(np.swapaxes(values, 1, 2), dtype=np.float32)
    paths_t = np.zeros(values_t.shape, dtype=np.int32)
    _glow_tts_maximum_path_c(paths_t, values_t,
                             np.ascontiguousarray(t_xs, dtype=np.int32),
                             np.ascontiguousarray(t_ys, dtype=np.int32))
    paths[...] = np.swapaxes(paths_t, 1, 2)
