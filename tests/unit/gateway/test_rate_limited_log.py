"""Client-provoked log lines: one per kind per interval, the rest counted and reported with the next one."""

from __future__ import annotations

import logging

import pytest

from gateway.rate_limited_log import RateLimitedLog
from remix.testing import ManualClock


def test_one_line_per_kind_per_interval_with_the_suppressed_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    limited = RateLimitedLog(logging.getLogger("test.limited"), interval_s=10.0, clock=clock)
    caplog.set_level(logging.WARNING, logger="test.limited")
    assert limited.warning("bad-body:GetFeed", "refused")
    assert [limited.warning("bad-body:GetFeed", "refused") for _ in range(5)] == [False] * 5
    assert limited.warning("bad-body:ModelInfer", "refused"), "kinds are limited apart"
    assert limited.suppressed("bad-body:GetFeed") == 5
    clock.advance(10.0)
    assert limited.warning("bad-body:GetFeed", "refused")
    assert limited.suppressed("bad-body:GetFeed") == 0
    messages = [(r.getMessage(), r.suppressed) for r in caplog.records]
    assert messages == [
        ("refused", 0),
        ("refused", 0),
        ("refused (5 more like it since the previous line were not logged)", 5),
    ]


def test_errors_carry_their_traceback_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    limited = RateLimitedLog(logging.getLogger("test.limited"), interval_s=1.0, clock=clock)
    caplog.set_level(logging.ERROR, logger="test.limited")
    for _ in range(3):
        try:
            raise KeyError("boom")
        except KeyError as error:
            limited.error("internal:GetFeed", "GetFeed failed", exc_info=error, extra={"request_id": "r-1"})
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError
    assert record.request_id == "r-1"


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s must be >= 0"):
        RateLimitedLog(logging.getLogger("x"), interval_s=-1)
