"""The short-first curriculum of the training sampler (train.short_first_epochs)."""

from __future__ import annotations

import numpy as np

from tests.training.conftest import tiny_cfg
from voicetrain.data.dataset import BucketBatchSampler

LENGTHS = [int(x) for x in np.random.default_rng(3).integers(50, 900, 100)]


def _epoch(s: BucketBatchSampler, e: int) -> list[list[int]]:
    s.set_epoch(e)
    return s.batches()


def test_early_epochs_take_the_shortest_utterances_then_all():
    s = BucketBatchSampler(LENGTHS, 8, seed=1, short_first_epochs=4)
    order = np.argsort(LENGTHS, kind="stable")
    for e, share in ((0, 0.3), (1, 0.475), (2, 0.65), (3, 0.825)):
        items = sorted(i for b in _epoch(s, e) for i in b)
        assert len(items) == round(share * len(LENGTHS))
        # the jittered keys (x0.9-1.1) may swap neighbours at the edge, never take a long one
        assert max(LENGTHS[i] for i in items) <= 1.1 / 0.9 * LENGTHS[order[len(items) - 1]]
    for e in (4, 5):
        assert sorted(i for b in _epoch(s, e) for i in b) == list(range(len(LENGTHS)))
    assert _epoch(s, 1) == _epoch(s, 1)  # a pure function of (seed, epoch): resume stays exact
    # without the curriculum, the same plans as before it existed
    off = BucketBatchSampler(LENGTHS, 8, seed=1)
    assert all(_epoch(off, e) == _epoch(BucketBatchSampler(LENGTHS, 8, seed=1, short_first_epochs=4), e)
               for e in (4, 7))
    assert len(s) == len(off)  # Lightning reads one length for every epoch: the full one (short epochs end sooner)


def test_a_run_trains_through_curriculum_epochs(tmp_path, prepared_demo_dataset):
    from voicetrain.training.train import train

    r = train(prepared_demo_dataset, tmp_path / "run", tiny_cfg(max_steps=8, val_every_steps=8, short_first_epochs=3,
                                                                batch_size=2))
    assert r.steps == 8
