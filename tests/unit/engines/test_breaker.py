from __future__ import annotations

import pytest

from engines.breaker import Breaker, BreakerState, Permit
from engines.config import BreakerConfig


class Clock:
    """A hand-driven monotonic clock: tests move time, nothing sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def breaker(clock: Clock, transitions: list[BreakerState] | None = None, **config: object) -> Breaker:
    def heard(_breaker: Breaker, state: BreakerState) -> None:
        if transitions is not None:
            transitions.append(state)

    return Breaker(BreakerConfig.model_validate(config), clock, on_change=heard)


def call(b: Breaker, *, ok: bool) -> None:
    permit = b.acquire()
    assert permit is not None, "the breaker refused a call the test expected it to let through"
    b.record(permit, ok=ok)


def test_consecutive_failures_open_then_half_open_probe_closes() -> None:
    clock, transitions = Clock(), []
    b = breaker(clock, transitions, consecutive_failures=3, open_s=5.0)
    for _ in range(2):
        call(b, ok=False)
    assert b.state is BreakerState.CLOSED
    call(b, ok=False)
    assert b.state is BreakerState.OPEN
    assert b.acquire() is None
    clock.advance(4.999)
    assert b.acquire() is None
    clock.advance(0.001)
    probe = b.acquire()
    assert probe == Permit(generation=2, probe=True)
    assert b.state is BreakerState.HALF_OPEN
    assert b.acquire() is None, "one probe at a time by default"
    b.record(probe, ok=True)
    assert b.state is BreakerState.CLOSED
    assert transitions == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_a_success_resets_the_consecutive_count() -> None:
    b = breaker(Clock(), consecutive_failures=3)
    for ok in (False, False, True, False, False, True, False, False):
        call(b, ok=ok)
    assert b.state is BreakerState.CLOSED


def test_a_failed_probe_reopens_for_another_open_s() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=1, open_s=2.0)
    call(b, ok=False)
    clock.advance(2.0)
    probe = b.acquire()
    assert probe is not None
    clock.advance(0.5)
    b.record(probe, ok=False)
    assert b.state is BreakerState.OPEN
    clock.advance(1.999)
    assert b.acquire() is None, "open_s counts from the re-opening, not from the first opening"
    clock.advance(0.001)
    assert b.acquire() is not None


def test_half_open_lets_n_probes_through_and_closes_when_all_succeed() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=1, open_s=1.0, half_open_probes=3)
    call(b, ok=False)
    clock.advance(1.0)
    probes = [b.acquire() for _ in range(3)]
    assert all(p is not None and p.probe for p in probes)
    assert b.acquire() is None
    for permit in probes[:2]:
        assert permit is not None
        b.record(permit, ok=True)
        assert b.state is BreakerState.HALF_OPEN
    assert b.acquire() is None, "two probes succeeded, one is running: no room for a fourth"
    assert probes[2] is not None
    b.record(probes[2], ok=True)
    assert b.state is BreakerState.CLOSED


def test_a_released_probe_frees_its_slot() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=1, open_s=1.0)
    call(b, ok=False)
    clock.advance(1.0)
    probe = b.acquire()
    assert probe is not None
    assert b.acquire() is None
    b.release(probe)  # the probing call was cancelled: no verdict
    assert b.state is BreakerState.HALF_OPEN
    assert b.acquire() is not None


def test_failure_rate_over_the_window_opens_once_enough_calls_finished() -> None:
    b = breaker(Clock(), consecutive_failures=100, failure_rate=0.5, window=10, min_calls=6)
    for ok in (False, True, False, True, False):  # 3 of 5 failed, but fewer than min_calls finished
        call(b, ok=ok)
    assert b.state is BreakerState.CLOSED
    call(b, ok=True)  # 3 of 6: the rate is reached, but only a failure can open it
    assert b.state is BreakerState.CLOSED
    call(b, ok=False)  # 4 of 7
    assert b.state is BreakerState.OPEN


def test_the_window_forgets_old_calls() -> None:
    b = breaker(Clock(), consecutive_failures=100, failure_rate=0.5, window=4, min_calls=4)
    for ok in (False, False, True, True, True, True, True, False):  # last four: 1 failure of 4
        call(b, ok=ok)
    assert b.state is BreakerState.CLOSED


def test_late_verdicts_from_an_earlier_state_change_nothing() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=2, open_s=1.0)
    slow = b.acquire()  # let through while closed, answers after the breaker opened
    assert slow is not None
    call(b, ok=False)
    call(b, ok=False)
    assert b.state is BreakerState.OPEN
    b.record(slow, ok=True)
    assert b.state is BreakerState.OPEN, "a success from before the opening must not close it"
    clock.advance(1.0)
    probe = b.acquire()
    assert probe is not None
    b.record(slow, ok=False)  # stale failure while half-open: not a probe verdict
    b.release(slow)
    assert b.state is BreakerState.HALF_OPEN
    b.record(probe, ok=True)
    assert b.state is BreakerState.CLOSED


@pytest.mark.parametrize("field", ["consecutive_failures", "window", "min_calls", "open_s", "half_open_probes"])
def test_config_rejects_non_positive_values(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BreakerConfig.model_validate({field: 0})
