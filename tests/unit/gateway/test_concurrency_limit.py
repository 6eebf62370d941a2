"""AdaptiveLimit: AIMD over latency, bounded, driven by a fake clock (no sockets, no sleeps)."""

from __future__ import annotations

import pytest

from gateway.concurrency_limit import AdaptiveLimit, LimitSettings


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def limiter(clock: FakeClock, **overrides: float) -> AdaptiveLimit:
    values: dict[str, float] = {"min_limit": 2, "max_limit": 20, "initial_limit": 10, "target_latency_s": 0.05}
    values.update(overrides)
    return AdaptiveLimit(LimitSettings(**values), clock)  # type: ignore[arg-type]


def fill(limit: AdaptiveLimit) -> int:
    taken = 0
    while limit.try_acquire():
        taken += 1
    return taken


def test_refuses_beyond_the_limit_and_admits_again_after_a_release() -> None:
    limit = limiter(FakeClock())
    assert fill(limit) == 10
    assert not limit.try_acquire()
    limit.release(None)
    assert limit.try_acquire()


def test_fast_requests_at_the_limit_grow_it_by_about_one_per_window_up_to_the_ceiling() -> None:
    limit = limiter(FakeClock(), max_limit=12)
    for _ in range(12):  # about one window of fast requests while the limit is in use
        fill(limit)
        limit.release(0.01)
    assert limit.limit == 11
    for _ in range(200):
        fill(limit)
        limit.release(0.01)
    assert limit.limit == 12, "never above the fixed ceiling"


def test_an_idle_gateway_does_not_grow_its_limit() -> None:
    limit = limiter(FakeClock())
    for _ in range(100):
        assert limit.try_acquire()
        limit.release(0.001)
    assert limit.limit == 10


def test_slow_requests_shrink_the_limit_once_per_window_down_to_the_floor() -> None:
    clock = FakeClock()
    limit = limiter(clock)
    fill(limit)
    for _ in range(10):  # a whole congested window reports together: one decrease
        limit.release(0.2)
    assert limit.limit == 9
    for _ in range(100):
        clock.now_s += 0.05
        assert limit.try_acquire()
        limit.release(0.2)
    assert limit.limit == 2, "never below min_limit"


def test_a_dropped_request_is_congestion_whatever_its_latency() -> None:
    limit = limiter(FakeClock())
    assert limit.try_acquire()
    limit.release(0.001, dropped=True)
    assert limit.limit == 9


def test_a_cancelled_request_is_no_sample() -> None:
    limit = limiter(FakeClock())
    fill(limit)
    for _ in range(10):
        limit.release(None)
    assert limit.limit == 10
    assert limit.in_flight == 0


def test_release_without_acquire_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="without a matching try_acquire"):
        limiter(FakeClock()).release(0.01)


def test_initial_limit_is_clamped_into_its_bounds() -> None:
    assert limiter(FakeClock(), initial_limit=500).limit == 20
    assert limiter(FakeClock(), initial_limit=1).limit == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"min_limit": 0}, "min_limit"),
        ({"min_limit": 30}, "min_limit"),
        ({"target_latency_s": 0}, "target_latency_s"),
        ({"target_latency_s": float("nan")}, "target_latency_s"),
        ({"backoff_ratio": 1.0}, "backoff_ratio"),
    ],
)
def test_bad_settings_are_refused_with_the_field_named(overrides: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        limiter(FakeClock(), **overrides)
