"""Budget arithmetic: one deadline, each step gets min(its own timeout, what is left)."""

from __future__ import annotations

import pytest

from remix.budget import Budget
from remix.testing import ManualClock


def test_remaining_counts_down_and_never_goes_negative() -> None:
    clock = ManualClock()
    budget = Budget.from_timeout(0.3, clock)
    assert budget.remaining_s() == pytest.approx(0.3)
    clock.advance(0.1)
    assert budget.remaining_s() == pytest.approx(0.2)
    assert not budget.expired()
    clock.advance(1.0)
    assert budget.remaining_s() == 0.0
    assert budget.expired()


def test_unbounded_budget_has_no_remaining_and_never_expires() -> None:
    clock = ManualClock()
    budget = Budget.from_timeout(None, clock)
    clock.advance(1e6)
    assert budget.remaining_s() is None
    assert not budget.expired()


@pytest.mark.parametrize(
    ("request_s", "step_s", "expected_s"),
    [
        (0.3, 0.1, 0.1),  # the step's own limit is tighter
        (0.05, 10.0, 0.05),  # the request deadline caps a generous step
        (0.3, None, 0.3),  # no own limit: what is left
        (None, 0.1, 0.1),  # unbounded request: the step's own limit
        (None, None, None),  # neither: no limit at all (never a magic -1)
    ],
)
def test_child_timeout_is_the_min_of_own_and_remaining(
    request_s: float | None, step_s: float | None, expected_s: float | None
) -> None:
    budget = Budget.from_timeout(request_s, ManualClock())
    assert budget.child_timeout_s(step_s) == (None if expected_s is None else pytest.approx(expected_s))


def test_child_timeout_uses_what_is_left_now() -> None:
    clock = ManualClock()
    budget = Budget.from_timeout(0.3, clock)
    clock.advance(0.25)
    assert budget.child_timeout_s(0.1) == pytest.approx(0.05)
    clock.advance(1.0)
    assert budget.child_timeout_s(0.1) == 0.0


def test_child_budget_ends_at_the_earlier_deadline() -> None:
    clock = ManualClock()
    parent = Budget.from_timeout(0.3, clock)
    tight = parent.child(0.1)
    loose = parent.child(5.0)
    clock.advance(0.2)
    assert tight.expired()
    assert loose.remaining_s() == pytest.approx(0.1)
    assert parent.child(None).deadline_s == parent.deadline_s


def test_manual_clock_refuses_to_go_back() -> None:
    with pytest.raises(ValueError, match="does not go back"):
        ManualClock().advance(-1.0)
