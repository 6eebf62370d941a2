"""The step wrapper: deadline, classification, fail-open, fallback, cancellation, trace."""

from __future__ import annotations

import asyncio
import logging

import pytest

from engines.errors import EngineTimeout, EngineUnavailable
from remix.compose import Fallback
from remix.context import Context
from remix.failures import Category, DependencyFailure, InvalidRequest, StepTimeout, WorkflowError
from remix.policy import Policy
from remix.testing import FuncStep, GateStep, ManualClock, RecordingStep, key, make_context
from remix.trace import Outcome
from remix.wrappers import Guarded, guard

OUT = key("out")


async def test_ok_step_records_name_outcome_timing_and_budget_left() -> None:
    clock = ManualClock()
    ctx = make_context(timeout_s=0.3, clock=clock)

    async def work(ctx: Context) -> None:
        clock.advance(0.05)
        ctx.set(OUT, 1)

    await guard(FuncStep("work", work, writes=[OUT]))(ctx)

    entry = ctx.trace.by_name("work")
    assert entry.outcome is Outcome.OK
    assert entry.elapsed_ms == pytest.approx(50.0)
    assert entry.budget_left_ms == pytest.approx(250.0)
    assert ctx.get(OUT) == 1
    assert not ctx.degraded


async def test_step_sees_a_budget_narrowed_to_its_own_timeout() -> None:
    ctx = make_context(timeout_s=0.3, clock=ManualClock())
    step = RecordingStep("s")
    await guard(step, Policy(timeout_s=0.1))(ctx)
    assert step.seen[0].budget.remaining_s() == pytest.approx(0.1)
    loose = RecordingStep("loose")
    await guard(loose, Policy(timeout_s=5.0))(ctx)
    assert loose.seen[0].budget.remaining_s() == pytest.approx(0.3)  # capped by the request


async def test_expired_budget_required_step_is_not_started_and_raises_step_timeout() -> None:
    clock = ManualClock()
    ctx = make_context(timeout_s=0.1, clock=clock)
    clock.advance(0.2)
    step = RecordingStep("late")

    with pytest.raises(StepTimeout) as caught:
        await guard(step)(ctx)

    assert step.calls == 0
    assert caught.value.category is Category.TIMEOUT
    assert caught.value.step == "late"
    entry = ctx.trace.by_name("late")
    assert entry.outcome is Outcome.TIMED_OUT
    assert "not started" in entry.detail
    assert entry.budget_left_ms == 0.0


async def test_expired_budget_fail_open_step_is_skipped_and_degrades() -> None:
    clock = ManualClock()
    ctx = make_context(timeout_s=0.1, clock=clock)
    clock.advance(0.2)
    step = RecordingStep("optional")

    await guard(step, Policy(fail_open=True))(ctx)

    assert step.calls == 0
    assert ctx.trace.by_name("optional").outcome is Outcome.TIMED_OUT
    assert [f.reason for f in ctx.failures] == ["optional: timeout"]


async def test_own_timeout_cuts_a_blocked_step_and_cancels_it() -> None:
    ctx = make_context()
    gate = GateStep("slow")

    with pytest.raises(StepTimeout) as caught:
        await guard(gate, Policy(timeout_s=0.01))(ctx)

    assert gate.cancelled.is_set()  # its cleanup ran
    assert isinstance(caught.value.__cause__, TimeoutError)
    entry = ctx.trace.by_name("slow")
    assert entry.outcome is Outcome.TIMED_OUT
    assert "own timeout 10 ms" in entry.detail


async def test_dependency_error_fail_closed_becomes_dependency_failure_with_cause() -> None:
    ctx = make_context()
    original = EngineUnavailable("connection refused", target="triton://ranker")

    with pytest.raises(DependencyFailure) as caught:
        await guard(RecordingStep("rank", error=original))(ctx)

    assert caught.value.step == "rank"
    assert caught.value.__cause__ is original
    assert ctx.trace.by_name("rank").outcome is Outcome.FAILED
    assert not ctx.degraded  # failing closed fails the request; it does not degrade it


async def test_backend_timeout_is_a_step_timeout() -> None:
    ctx = make_context()
    with pytest.raises(StepTimeout):
        await guard(RecordingStep("rank", error=EngineTimeout("slow")))(ctx)
    assert ctx.trace.by_name("rank").outcome is Outcome.TIMED_OUT


async def test_workflow_errors_pass_through_unchanged() -> None:
    ctx = make_context()
    error = InvalidRequest("count must be positive")
    with pytest.raises(InvalidRequest) as caught:
        await guard(RecordingStep("rewrite", error=error))(ctx)
    assert caught.value is error
    assert caught.value.step == "rewrite"  # filled in where it was missing


async def test_fail_open_dependency_error_degrades_and_returns() -> None:
    ctx = make_context()
    await guard(RecordingStep("jobs", writes={OUT: 1}, error=ConnectionError("down")), Policy(fail_open=True))(ctx)
    assert not ctx.has(OUT)
    entry = ctx.trace.by_name("jobs")
    assert entry.outcome is Outcome.FAILED_OPEN
    assert "failed open" in entry.detail
    assert [f.reason for f in ctx.failures] == ["jobs: dependency"]


async def test_programming_error_fails_open_but_is_logged_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    ctx = make_context()
    with caplog.at_level(logging.ERROR, logger="remix.wrappers"):
        await guard(RecordingStep("buggy", error=ZeroDivisionError("oops")), Policy(fail_open=True))(ctx)
    assert [f.reason for f in ctx.failures] == ["buggy: internal"]
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "buggy" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is ZeroDivisionError


async def test_programming_error_fail_closed_is_internal_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    ctx = make_context()
    inner = guard(RecordingStep("buggy", error=KeyError("x")))
    with caplog.at_level(logging.ERROR, logger="remix.wrappers"), pytest.raises(WorkflowError) as caught:
        await guard(inner, Policy(timeout_s=1.0))(ctx)  # nested: the outer wrapper must not log again
    assert caught.value.category is Category.INTERNAL
    assert isinstance(caught.value.__cause__, KeyError)
    assert len(caplog.records) == 1


async def test_fallback_answers_on_error_and_marks_the_answer_degraded() -> None:
    ctx = make_context()
    primary = RecordingStep("rank", writes={OUT: "model"}, error=EngineUnavailable("down"))
    fallback = RecordingStep("rank.first_pass_order", writes={OUT: "first pass"})

    await guard(primary, Policy(fallback=fallback))(ctx)

    assert ctx.get(OUT) == "first pass"
    entry = ctx.trace.by_name("rank")
    assert entry.outcome is Outcome.FELL_BACK
    assert "'rank.first_pass_order' answered" in entry.detail
    assert ctx.trace.by_name("rank.first_pass_order").outcome is Outcome.OK
    assert [f.reason for f in ctx.failures] == ["rank: dependency"]


async def test_fallback_answers_on_timeout_with_the_budget_left() -> None:
    ctx = make_context(timeout_s=30.0)
    primary = GateStep("rank", writes={OUT: "model"})
    fallback = RecordingStep("cheap", writes={OUT: "cheap"})

    await Fallback(guard(primary, Policy(timeout_s=0.01)), fallback)(ctx)

    assert primary.cancelled.is_set()
    assert ctx.get(OUT) == "cheap"
    # The primary's own timeout does not apply to the fallback: it sees the request's budget.
    assert fallback.seen[0].budget.remaining_s() == pytest.approx(30.0, abs=1.0)
    assert ctx.trace.by_name("rank").outcome is Outcome.FELL_BACK
    assert [f.reason for f in ctx.failures] == ["rank: timeout"]
    assert [e.name for e in ctx.trace.entries] == ["cheap", "rank"]  # one entry for the pair, merged


async def test_fallback_that_fails_too_fails_closed_with_the_primary_error() -> None:
    ctx = make_context()
    primary = RecordingStep("rank", error=EngineUnavailable("down"))
    fallback = RecordingStep("cheap", error=ValueError("also broken"))

    with pytest.raises(DependencyFailure):
        await Fallback(primary, fallback)(ctx)

    entry = ctx.trace.by_name("rank")
    assert entry.outcome is Outcome.FAILED
    assert "'cheap' failed too" in entry.detail
    assert ctx.trace.by_name("cheap").outcome is Outcome.FAILED


async def test_fallback_that_fails_too_can_fail_open() -> None:
    ctx = make_context()
    primary = RecordingStep("rank", error=ConnectionError())
    await Fallback(primary, RecordingStep("cheap", error=ConnectionError()), fail_open=True)(ctx)
    assert ctx.trace.by_name("rank").outcome is Outcome.FAILED_OPEN
    assert [f.reason for f in ctx.failures] == ["rank: dependency"]


async def test_cancellation_is_recorded_and_propagates() -> None:
    ctx = make_context()
    gate = GateStep("blocked")
    task = asyncio.create_task(guard(gate, Policy(fail_open=True))(ctx))
    await gate.started.wait()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert gate.cancelled.is_set()
    assert ctx.trace.by_name("blocked").outcome is Outcome.CANCELLED
    assert not ctx.degraded  # fail-open never swallows a cancellation


def test_guard_is_idempotent_and_does_not_stack_wrappers() -> None:
    step = RecordingStep("s")
    guarded = guard(step)
    assert guard(guarded) is guarded
    timed = guard(guarded, Policy(timeout_s=0.1))
    assert isinstance(timed, Guarded)
    assert timed.inner is step
    assert timed.policy.timeout_s == 0.1


@pytest.mark.parametrize("timeout_s", [0.0, -1.0, float("inf"), float("nan")])
def test_policy_rejects_meaningless_timeouts(timeout_s: float) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        Policy(timeout_s=timeout_s)
