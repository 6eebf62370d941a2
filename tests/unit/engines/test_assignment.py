"""The one assignment mechanism: stable, uniform, independent per salt; route arms and experiment buckets
use it (release canaries too: tests/unit/gateway/test_release_serving.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from engines.assignment import assign, assignment_point
from engines.router import routing_point
from remix.steps import experiment_bucket


def test_points_are_stable_uniform_and_independent_per_salt() -> None:
    assert assignment_point("a", 7) == assignment_point("a", 7)
    points = [assignment_point("a", k) for k in range(20_000)]
    assert all(0.0 <= p < 1.0 for p in points)
    deciles = Counter(int(p * 10) for p in points)
    assert all(1800 < deciles[d] < 2200 for d in range(10))
    same_side = sum((assignment_point("a", k) < 0.5) == (assignment_point("b", k) < 0.5) for k in range(20_000))
    assert 9_500 < same_side < 10_500  # another salt: another, unrelated split


def test_route_arms_and_experiment_buckets_are_the_same_mechanism() -> None:
    for key in range(100):
        assert routing_point("feed_ranker", key) == assignment_point("feed_ranker", key)
        assert experiment_bucket(key, "feed", ("a", "b", "c")) == assign("feed", key, ("a", "b", "c"))


def test_assign_needs_arms() -> None:
    with pytest.raises(ValueError, match="no arms"):
        assign("s", 1, ())
