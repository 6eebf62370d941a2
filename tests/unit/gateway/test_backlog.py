from __future__ import annotations

import pytest

from gateway.backlog import (
    EXPERIMENTS_ENV,
    PENDING_HARD_LIMIT,
    PENDING_SOFT_LIMIT,
    SHEDDING_EXPERIMENT,
    backlog_options,
    enable_shedding_experiment,
    refusals_are_resource_exhausted,
    with_shedding_experiment,
)


def test_the_setting_is_the_hard_bound_and_early_refusals_start_at_half() -> None:
    assert dict(backlog_options(32)) == {PENDING_SOFT_LIMIT: 16, PENDING_HARD_LIMIT: 32}


def test_one_pending_call_at_most_means_none_waits_behind_another() -> None:
    # core allows a new call while the list holds <= soft and refuses it from hard on: soft 0, hard 1 lets
    # one call wait when none does, and refuses every call that would wait behind it
    assert dict(backlog_options(1)) == {PENDING_SOFT_LIMIT: 0, PENDING_HARD_LIMIT: 1}


def test_refuses_an_unbounded_or_empty_queue() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        backlog_options(0)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("", "ph2_server"),
        ("tcp_rcv_lowat", "tcp_rcv_lowat,ph2_server"),
        (" tcp_rcv_lowat , ", "tcp_rcv_lowat,ph2_server"),
        ("ph2_server", "ph2_server"),  # not twice
        ("-ph2_server", "-ph2_server"),  # an operator turned it off: that stands
    ],
)
def test_the_shedding_experiment_is_added_unless_named(before: str, after: str) -> None:
    assert with_shedding_experiment(before) == after


def test_the_environment_says_how_core_refuses() -> None:
    environ = {"OTHER": "1"}
    assert not refusals_are_resource_exhausted(environ)
    enable_shedding_experiment(environ)
    assert environ == {"OTHER": "1", EXPERIMENTS_ENV: SHEDDING_EXPERIMENT}
    assert refusals_are_resource_exhausted(environ)
    assert not refusals_are_resource_exhausted({EXPERIMENTS_ENV: "-ph2_server"})
