"""The training batch samplers under DDP: each rank takes its share of one (seed, epoch) plan.

Rank and world size are given explicitly here (a pure test of the sharding); tests/training/test_ddp.py
runs two real gloo processes through `voicetrain train`.
"""

from __future__ import annotations

import numpy as np
import pytest

from voicetrain.data.dataset import BucketBatchSampler, shard_batches
from voicetrain.data.vocoder_dataset import SegmentBatchSampler

LENGTHS = np.random.default_rng(3).integers(50, 400, 53).tolist()


def _bucket(rank, world_size, **kw):
    return BucketBatchSampler(LENGTHS, 4, seed=7, rank=rank, world_size=world_size, **kw)


def _segment(rank, world_size, **kw):
    return SegmentBatchSampler(61, 4, seed=7, rank=rank, world_size=world_size, **kw)


@pytest.mark.parametrize("make", [_bucket, _segment], ids=["bucket", "segment"])
@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_take_disjoint_equal_shares_of_one_plan(make, world_size):
    for epoch in (0, 1, 5):
        samplers = [make(r, world_size) for r in range(world_size)]
        for s in samplers:
            s.set_epoch(epoch)
        plan = make(0, 1)
        plan.set_epoch(epoch)
        full = plan.plan()
        assert [tuple(b) for b in plan.batches()] == [tuple(b) for b in full]  # one process: the whole plan
        shares = [list(s) for s in samplers]
        n = len(full) // world_size
        assert [len(x) for x in shares] == [n] * world_size == [len(s) for s in samplers]  # lockstep
        seen = [tuple(b) for share in shares for b in share]
        assert len(seen) == len(set(seen))  # no batch on two ranks
        items = [i for b in seen for i in b]
        assert len(items) == len(set(items))  # and no utterance twice
        # together they cover the plan, less the last len(plan) % world_size batches
        assert set(seen) == {tuple(b) for b in full[: n * world_size]}
        assert all(s.plan() == full for s in samplers)  # every rank draws the same plan


def test_the_plan_changes_with_the_epoch_and_not_with_the_rank():
    a, b = _bucket(0, 2), _bucket(1, 2)
    a.set_epoch(1)
    b.set_epoch(1)
    assert a.plan() == b.plan()
    e0 = _bucket(0, 2)
    assert e0.plan() != a.plan() and list(e0) != list(a)


@pytest.mark.parametrize("make", [_bucket, _segment], ids=["bucket", "segment"])
def test_resume_skips_this_ranks_consumed_batches(make):
    for rank in (0, 1):
        whole = make(rank, 2)
        whole.set_epoch(2)
        share = list(whole)
        resumed = make(rank, 2, skip=(2, 3))  # 3 of this rank's batches were done in epoch 2
        resumed.set_epoch(2)
        assert list(resumed) == share[3:]
        resumed.set_epoch(3)  # the skip applies once
        whole.set_epoch(3)
        assert list(resumed) == list(whole)


def test_ordered_samplers_are_not_sharded():
    """Validation (and align, check) batches are in order, and every process needs all of them."""
    val = BucketBatchSampler(LENGTHS, 4, shuffle=False, rank=1, world_size=2)
    assert list(val) == val.plan() and len(val) == len(val.plan())


def test_fewer_batches_than_ranks():
    plan = [[0, 1], [2]]
    assert [shard_batches(plan, r, 3) for r in range(3)] == [[[0, 1]], [[2]], [[0, 1]]]
    assert shard_batches([], 1, 2) == []
