"""The one quality score that picks a voice's checkpoint, and the noise it is judged against.

Pure functions: no model is loaded here. Training's quality tracking
(:mod:`voicetrain.training.quality`) and ``eval --select-best``
(:func:`voicetrain.evaluation.evaluate_run.select_checkpoint`) both score checkpoints with
:func:`sentence_quality` and compare them with :func:`paired_difference`, so a run is chosen
the same way during and after training.

The score, per synthesized sentence::

    q = speaker_similarity - min(Whisper CER, 1)

and a checkpoint's score is the mean of ``q`` over a fixed set of sentences. Higher is better.
Both terms lie in [0, 1] for speech, and one point of CER is worth one point of similarity:
on the measured runs (issue 14) a trained voice gains 0.01-0.02 in similarity over the last
thousands of steps while its CER falls by about as much, so neither term drowns the other.
CER is capped at 1 so that an untrained model's insertions cannot outweigh everything else.
Without speaker similarity (one speaker encoder missing, or turned off) ``q = -min(CER, 1)``.

Noise. Two checkpoints are compared on the same sentences: the per-sentence differences
``q_a - q_b`` are bootstrapped (resampling sentences, 2,000 draws, fixed seed) into a 95%
interval of the mean difference. "Worse beyond noise" means that whole interval is below 0.

The choice (:func:`choose_latest_within_noise`): the *latest* checkpoint whose quality is not worse
beyond noise than the highest-scoring one. On 8-20 sentences the highest score is often an early
checkpoint that won by noise: on the 250-utterance rms voice the highest of 7 validation scores was
step 600, worse on held-out text beyond noise than step 1200, while steps 600-1259 were all within
noise of each other on the validation sentences (bench/selection.py). While a voice is still
improving, the later of two checkpoints the measurement cannot tell apart is the better bet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

QUALITY_RULE = ("quality = speaker similarity - min(Whisper CER, 1), averaged over the scored sentences "
                "(without speaker similarity: -min(CER, 1)); higher is better")


def sentence_quality(cer: float | None, similarity: float | None) -> float | None:
    """One sentence's quality (see the module docstring); None when its CER is unknown."""
    if cer is None or not math.isfinite(cer):
        return None
    q = -min(float(cer), 1.0)
    if similarity is not None and math.isfinite(similarity):
        q += float(similarity)
    return q


def mean_quality(values: Sequence[float | None]) -> float | None:
    """Mean of the defined per-sentence qualities; None when there is none."""
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over the sentences both scored, with a paired bootstrap 95% interval."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def worse_beyond_noise(self) -> bool:
        """``a`` is worse than ``b`` with the whole interval below 0."""
        return self.n >= 2 and self.high < 0.0

    @property
    def better_beyond_noise(self) -> bool:
        return self.n >= 2 and self.low > 0.0


def paired_difference(a: Mapping[str, float | None], b: Mapping[str, float | None], *, draws: int = 2000,
                      seed: int = 0, level: float = 0.95) -> PairedDifference | None:
    """Paired bootstrap of mean(a[k] - b[k]) over the keys (sentence ids) defined in both.

    None when no sentence is shared. With one shared sentence the interval is that one value.
    """
    keys = [k for k in a if k in b and a[k] is not None and b[k] is not None
            and math.isfinite(a[k]) and math.isfinite(b[k])]
    if not keys:
        return None
    d = np.array([a[k] - b[k] for k in keys], dtype=np.float64)
    if len(d) == 1:
        return PairedDifference(float(d[0]), float(d[0]), float(d[0]), 1)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(draws, len(d)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return PairedDifference(float(d.mean()), float(lo), float(hi), len(d))


def choose_latest_within_noise(entries: Sequence[Mapping]) -> int | None:
    """Index of the chosen entry among ``[{"score", "values": {sentence: q}, ...}]`` in training order.

    The highest-scoring entry sets the bar; the choice is the last entry that is not worse than it
    beyond noise (see the module docstring). None when no entry has a score.
    """
    scored = [i for i, e in enumerate(entries) if e.get("score") is not None and math.isfinite(e["score"])]
    if not scored:
        return None
    best = max(scored, key=lambda i: (entries[i]["score"], i))
    for i in reversed(scored):
        if i == best:
            return i
        d = paired_difference(entries[i].get("values") or {}, entries[best].get("values") or {})
        if d is not None and not d.worse_beyond_noise:
            return i
    return best
