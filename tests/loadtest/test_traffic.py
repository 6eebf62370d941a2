"""The load test's request mix (loadtest/traffic.py), without Locust."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from loadtest.traffic import FeedTraffic, TrafficShape, members_in_world

DRAWS = 20_000


def draws(shape: TrafficShape, user: int = 1) -> list[tuple[int, int, bool]]:
    traffic = FeedTraffic(shape)
    rng = traffic.stream(user)
    calls = [traffic.next_call(rng) for _ in range(DRAWS)]
    return [(call.member_id, call.count, call.debug) for call in calls]


def test_members_are_zipf_distributed_over_the_world() -> None:
    shape = TrafficShape(members=1_000, zipf_s=1.1)
    traffic = FeedTraffic(shape)
    members = Counter(member for member, _count, _debug in draws(shape))
    assert set(members) <= set(range(1, 1_001))
    # The most active member is the permutation's rank 0 and is far ahead of a median one.
    top, top_calls = members.most_common(1)[0]
    assert top == traffic.member_by_rank(0)
    assert top_calls > 0.1 * DRAWS
    # The top 1% of members send a large share of the calls (a uniform draw would give them 1%).
    hot = sum(calls for _member, calls in members.most_common(10))
    assert hot > 0.35 * DRAWS
    # Hot members are spread over the id range, not the lowest ids.
    assert sorted(traffic.member_by_rank(rank) for rank in range(10)) != list(range(1, 11))


def test_page_sizes_and_debug_share_follow_the_shape() -> None:
    shape = TrafficShape(counts=(10, 20, 50, 100), count_weights=(0.15, 0.35, 0.4, 0.1), debug_share=0.02)
    calls = draws(shape)
    counts = Counter(count for _member, count, _debug in calls)
    for count, weight in zip(shape.counts, shape.count_weights, strict=True):
        assert counts[count] / DRAWS == pytest.approx(weight, abs=0.02)
    assert sum(debug for *_rest, debug in calls) / DRAWS == pytest.approx(0.02, abs=0.005)


def test_streams_are_reproducible_per_user_and_differ_between_users() -> None:
    shape = TrafficShape(members=500)
    assert draws(shape, user=3) == draws(shape, user=3)
    assert draws(shape, user=3) != draws(shape, user=4)


def test_think_time_stays_within_bounds() -> None:
    traffic = FeedTraffic(TrafficShape(think_min_s=0.1, think_max_s=0.2))
    rng = traffic.stream(1)
    assert all(0.1 <= traffic.think_s(rng) <= 0.2 for _ in range(1_000))


@pytest.mark.parametrize(
    "bad",
    [
        {"members": 0},
        {"counts": (10, 20), "count_weights": (1.0,)},
        {"counts": (0,), "count_weights": (1.0,)},
        {"count_weights": (0.0, 0.0, 0.0, 0.0)},
        {"debug_share": 1.5},
        {"deadline_s": 0.0},
        {"think_min_s": 0.3, "think_max_s": 0.1},
    ],
)
def test_bad_shapes_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message names the field; any field may be first
        TrafficShape(**bad)  # type: ignore[arg-type]


def test_member_count_comes_from_the_world_manifest(tmp_path: Path) -> None:
    assert members_in_world(tmp_path) is None
    (tmp_path / "world.json").write_text(json.dumps({"members": 800, "items": 8000}))
    assert members_in_world(tmp_path) == 800
