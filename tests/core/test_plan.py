"""Tests for spikewatch.core.plan."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spikewatch.core.plan import (
    PlannedConnection,
    plan_duration,
    plan_ramp,
    plan_spike,
    shard_plan,
)


def test_spike_splits_25_into_9_8_8() -> None:
    """The spec's avalanche (25 in 3 batches, 1 s apart) gives batches of 9, 8 and 8."""
    plan = plan_spike(25, 3, 1.0)
    assert Counter(p.group for p in plan) == {0: 9, 1: 8, 2: 8}
    assert [p.index for p in plan] == list(range(25))
    assert {p.group: p.offset for p in plan} == {0: 0.0, 1: 1.0, 2: 2.0}


def test_spike_single_batch_starts_all_at_zero() -> None:
    """One batch opens every connection at offset 0."""
    assert plan_spike(3, 1, 5.0) == (
        PlannedConnection(0, 0, 0.0),
        PlannedConnection(1, 0, 0.0),
        PlannedConnection(2, 0, 0.0),
    )


def test_spike_with_fewer_connections_than_batches_leaves_late_batches_empty() -> None:
    """Two connections in four batches go into the first two batches only."""
    plan = plan_spike(2, 4, 0.5)
    assert plan == (PlannedConnection(0, 0, 0.0), PlannedConnection(1, 1, 0.5))
    assert plan_duration(plan) == 0.5


def test_spike_of_zero_connections_is_empty() -> None:
    """Zero connections plan nothing."""
    assert plan_spike(0, 3, 1.0) == ()


@pytest.mark.parametrize(
    ("connections", "batches", "interval", "message"),
    [
        (-1, 1, 1.0, "connections"),
        (1, 0, 1.0, "batches"),
        (1, 1, -0.1, "batch_interval"),
        (1, 1, math.nan, "batch_interval"),
        (1, 1, math.inf, "batch_interval"),
    ],
)
def test_spike_rejects_bad_arguments(
    connections: int, batches: int, interval: float, message: str
) -> None:
    """Negative counts, no batches, and negative or non-finite intervals are rejected."""
    with pytest.raises(ValueError, match=message):
        plan_spike(connections, batches, interval)


@given(
    connections=st.integers(0, 500),
    batches=st.integers(1, 50),
    interval=st.floats(0, 100, allow_nan=False),
)
def test_spike_batches_are_as_even_as_possible(
    connections: int, batches: int, interval: float
) -> None:
    """Batch sizes differ by at most one, larger first, and sum to the connections."""
    plan = plan_spike(connections, batches, interval)
    sizes = [sum(1 for p in plan if p.group == k) for k in range(batches)]
    assert sum(sizes) == connections
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)
    assert all(p.offset == p.group * interval for p in plan)


def test_ramp_opens_each_step_at_its_offset() -> None:
    """The spec's ramp [5, 10, 15] every 10 s opens 5 at 0 s, 10 at 10 s, 15 at 20 s."""
    plan = plan_ramp([5, 10, 15], 10.0)
    assert len(plan) == 30
    assert Counter((p.group, p.offset) for p in plan) == {(0, 0.0): 5, (1, 10.0): 10, (2, 20.0): 15}
    assert [p.index for p in plan] == list(range(30))
    assert plan_duration(plan) == 20.0


def test_ramp_empty_step_keeps_its_slot() -> None:
    """A step of zero connections still takes its interval."""
    assert plan_ramp([1, 0, 1], 2.0) == (
        PlannedConnection(0, 0, 0.0),
        PlannedConnection(1, 2, 4.0),
    )


def test_ramp_offsets_do_not_drift() -> None:
    """Step k starts at exactly k * interval, not at a sum of k rounded intervals."""
    plan = plan_ramp([1] * 1000, 0.1)
    assert plan[-1].offset == 999 * 0.1


@pytest.mark.parametrize(
    ("steps", "interval", "message"),
    [([1, -1], 1.0, r"steps\[1\]"), ([1], -1.0, "step_interval"), ([1], math.nan, "step_interval")],
)
def test_ramp_rejects_bad_arguments(steps: list[int], interval: float, message: str) -> None:
    """Negative step sizes and negative or NaN intervals are rejected."""
    with pytest.raises(ValueError, match=message):
        plan_ramp(steps, interval)


def test_shard_is_round_robin_by_index() -> None:
    """Replica 1 of 3 gets indexes 1, 4, 7, ... with their original group and offset."""
    plan = plan_spike(10, 2, 1.0)
    share = shard_plan(plan, 1, 3)
    assert [p.index for p in share] == [1, 4, 7]
    assert all(p == plan[p.index] for p in share)


def test_shard_of_one_replica_is_the_plan() -> None:
    """A single replica gets the whole plan."""
    plan = plan_ramp([2, 3], 1.0)
    assert shard_plan(plan, 0, 1) == plan


@given(
    steps=st.lists(st.integers(0, 20), max_size=10),
    replicas=st.integers(1, 8),
)
def test_shards_partition_the_plan(steps: list[int], replicas: int) -> None:
    """The shares of all replicas are disjoint and together are exactly the plan."""
    plan = plan_ramp(steps, 0.25)
    shares = [shard_plan(plan, r, replicas) for r in range(replicas)]
    assert sorted((p for share in shares for p in share), key=lambda p: p.index) == list(plan)
    assert max(len(s) for s in shares) - min(len(s) for s in shares) <= 1


@pytest.mark.parametrize(
    ("replica", "replicas", "message"),
    [(0, 0, "replicas"), (-1, 2, "replica"), (2, 2, "replica")],
)
def test_shard_rejects_bad_arguments(replica: int, replicas: int, message: str) -> None:
    """No replicas, or a replica number outside [0, replicas), is rejected."""
    with pytest.raises(ValueError, match=message):
        shard_plan(plan_spike(4, 1, 0.0), replica, replicas)


def test_duration_of_empty_plan_is_zero() -> None:
    """An empty plan takes no time."""
    assert plan_duration(()) == 0.0
