"""Between steps: no step starts once the caller is gone."""

from __future__ import annotations

import pytest

from remix.compose import Sequence
from remix.failures import StepTimeout
from remix.policy import Policy
from remix.request import FeedRequest
from remix.testing import FuncStep, RecordingStep, make_context, make_request
from remix.trace import Outcome
from remix.wrappers import guard


async def test_no_step_starts_after_the_caller_leaves() -> None:
    gone = False

    async def leave(_: object) -> None:
        nonlocal gone
        gone = True  # the caller cancels while this step runs

    ctx = make_context(make_request(caller_gone=lambda: gone), timeout_s=5.0)
    after = RecordingStep("after")
    with pytest.raises(StepTimeout, match="caller is gone"):
        await guard(Sequence("wf", [FuncStep("leave", leave), after]))(ctx)
    assert after.calls == 0
    assert ctx.trace.by_name("after").outcome is Outcome.TIMED_OUT


async def test_a_fail_open_step_is_skipped_and_the_request_degraded() -> None:
    ctx = make_context(make_request(caller_gone=lambda: True), timeout_s=5.0)
    step = RecordingStep("optional")
    await guard(step, Policy(fail_open=True))(ctx)
    assert step.calls == 0
    assert ctx.degraded


def test_quality_must_be_a_fraction() -> None:
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="quality"):
            FeedRequest(request_id="r", member_id=1, count=1, quality=bad)


def test_caller_gone_is_not_part_of_the_request_value() -> None:
    assert make_request(caller_gone=lambda: True) == make_request()
