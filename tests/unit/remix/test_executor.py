"""The executor: one budget per request, derived limits, errors by category, cancellation, trace."""

from __future__ import annotations

import asyncio

import pytest

from remix.compose import Parallel, Sequence
from remix.context import Context
from remix.executor import execute, new_context, request_timeout_s, run_workflow
from remix.failures import Category, DependencyFailure, StepTimeout
from remix.graph import WorkflowBuildError
from remix.policy import Policy
from remix.testing import FuncStep, GateStep, ManualClock, RecordingStep, key, make_request
from remix.trace import Outcome
from remix.workflow import Workflow
from remix.wrappers import guard

A, B, FEED = key("a"), key("b"), key("feed")


def _workflow(*steps: object, default_timeout_s: float | None = None) -> Workflow:
    return Workflow("feed", "1", Sequence("feed", steps), default_timeout_s=default_timeout_s)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("caller_s", "default_s", "expected_s"),
    [(0.2, 0.3, 0.2), (0.5, 0.3, 0.3), (None, 0.3, 0.3), (0.2, None, 0.2), (None, None, None)],
)
def test_request_budget_is_the_shorter_of_caller_and_workflow_default(
    caller_s: float | None, default_s: float | None, expected_s: float | None
) -> None:
    workflow = _workflow(RecordingStep("s"), default_timeout_s=default_s)
    assert request_timeout_s(workflow, caller_s) == expected_s
    clock = ManualClock()
    ctx = new_context(workflow, make_request(), timeout_s=caller_s, clock=clock)
    assert ctx.budget.remaining_s() == (None if expected_s is None else pytest.approx(expected_s))


async def test_run_returns_the_context_with_slots_and_trace() -> None:
    workflow = _workflow(
        RecordingStep("produce", writes={A: 1}),
        Parallel("sources", [RecordingStep("x", writes={B: 2}), RecordingStep("y", writes={FEED: 3})]),
        default_timeout_s=1.0,
    )
    ctx = await run_workflow(workflow, make_request(), timeout_s=0.5, clock=ManualClock())

    assert (ctx.get(A), ctx.get(B), ctx.get(FEED)) == (1, 2, 3)
    assert not ctx.degraded
    names = [e.name for e in ctx.trace.entries]
    assert names[0] == "produce"
    assert set(names[1:3]) == {"x", "y"}
    assert names[3:] == ["sources", "feed"]
    assert all(e.outcome is Outcome.OK for e in ctx.trace.entries)
    assert all(e.budget_left_ms == pytest.approx(500.0) for e in ctx.trace.entries)  # the clock never moved


async def test_required_step_after_the_deadline_raises_step_timeout_and_is_not_started() -> None:
    clock = ManualClock()

    async def slow(ctx: Context) -> None:
        clock.advance(0.4)  # spends more than the whole request budget
        ctx.set(A, 1)

    late = RecordingStep("rank", reads=[A])
    workflow = _workflow(FuncStep("features", slow, writes=[A]), late, default_timeout_s=0.3)

    with pytest.raises(StepTimeout) as caught:
        await run_workflow(workflow, make_request(), clock=clock)

    assert caught.value.category is Category.TIMEOUT
    assert caught.value.step == "rank"
    assert late.calls == 0


async def test_execute_keeps_the_trace_of_a_failed_request() -> None:
    workflow = _workflow(RecordingStep("ok"), RecordingStep("broken", error=ConnectionError("down")))
    ctx = new_context(workflow, make_request())
    with pytest.raises(DependencyFailure):
        await execute(workflow, ctx)
    assert [(e.name, e.outcome) for e in ctx.trace.entries] == [
        ("ok", Outcome.OK),
        ("broken", Outcome.FAILED),
        ("feed", Outcome.FAILED),
    ]


async def test_lost_optional_branch_still_answers_degraded() -> None:
    workflow = _workflow(
        Parallel(
            "sources",
            [
                guard(RecordingStep("network", writes={A: 1}), Policy(fail_open=True)),
                guard(RecordingStep("jobs", writes={B: 2}, error=ConnectionError()), Policy(fail_open=True)),
            ],
        ),
        RecordingStep("merge", optional_reads=[A, B], writes={FEED: "ok"}),
    )
    ctx = await run_workflow(workflow, make_request())
    assert ctx.get(FEED) == "ok"
    assert ctx.degraded
    assert [f.reason for f in ctx.failures] == ["jobs: dependency"]


async def test_cancelling_the_request_propagates_and_records_cancelled_everywhere() -> None:
    network, jobs = GateStep("network"), GateStep("jobs")
    workflow = _workflow(
        RecordingStep("rewrite"),
        Parallel("sources", [guard(network, Policy(fail_open=True)), guard(jobs, Policy(fail_open=True))]),
        RecordingStep("rank"),
    )
    ctx = new_context(workflow, make_request(), timeout_s=30.0)
    task = asyncio.create_task(execute(workflow, ctx))
    await network.started.wait()
    await jobs.started.wait()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert network.cancelled.is_set()
    assert jobs.cancelled.is_set()
    outcomes = {e.name: e.outcome for e in ctx.trace.entries}
    assert outcomes == {
        "rewrite": Outcome.OK,
        "network": Outcome.CANCELLED,
        "jobs": Outcome.CANCELLED,
        "sources": Outcome.CANCELLED,
        "feed": Outcome.CANCELLED,
    }
    assert not ctx.degraded


async def test_single_leaf_workflow_is_cut_at_the_request_deadline() -> None:
    gate = GateStep("only")
    workflow = Workflow("solo", "1", gate)
    with pytest.raises(StepTimeout):
        await run_workflow(workflow, make_request(), timeout_s=0.01)
    assert gate.cancelled.is_set()


def test_workflow_is_validated_when_constructed() -> None:
    with pytest.raises(WorkflowBuildError, match="no earlier step writes it"):
        _workflow(RecordingStep("rank", reads=[A]))


def test_workflow_rejects_a_meaningless_default_timeout() -> None:
    with pytest.raises(ValueError, match="default_timeout_s"):
        _workflow(RecordingStep("s"), default_timeout_s=0.0)
