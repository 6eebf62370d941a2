"""Sequence, parallel fan-out with join, switch."""

from __future__ import annotations

import asyncio
import enum

import pytest

from remix.compose import Parallel, Sequence, Switch
from remix.context import Context
from remix.failures import Category, DependencyFailure, InvalidRequest, StepTimeout, WorkflowError
from remix.keys import Key
from remix.policy import Policy
from remix.selectors import ContextSelector, RequestSelector, SlotSelector
from remix.testing import FuncStep, GateStep, RecordingStep, key, make_context, make_request
from remix.trace import Outcome
from remix.wrappers import guard

A, B, C = key("a"), key("b"), key("c")
BUCKET: Key[str] = Key("bucket", str)


# --- sequence ---------------------------------------------------------------------------------------------


async def test_sequence_runs_in_order_and_passes_data_through_keys() -> None:
    log: list[str] = []

    async def double(ctx: Context) -> None:
        log.append("double")
        ctx.set(B, ctx.get(A) * 2)

    seq = Sequence(
        "seq",
        [
            RecordingStep("first", writes={A: 21}, log=log),
            FuncStep("double", double, reads=[A], writes=[B]),
            RecordingStep("last", reads=[B], log=log),
        ],
    )
    ctx = make_context()
    await seq(ctx)

    assert log == ["first", "double", "last"]
    assert ctx.get(B) == 42
    assert [e.name for e in ctx.trace.entries] == ["first", "double", "last"]
    assert seq.reads == frozenset()  # what it writes itself is not an outside requirement
    assert seq.writes == {A, B}


@pytest.mark.parametrize("yielding", [False, True])
async def test_a_sequence_gives_the_loop_a_turn_between_steps_only_when_the_request_asks(yielding: bool) -> None:
    """Work queued on the loop during a step (a server taking a new call) runs before the next step only
    when the request yields between steps; otherwise the sequence runs through to its end first."""
    log: list[str] = []

    async def first(ctx: Context) -> None:
        asyncio.get_running_loop().call_soon(log.append, "other work")
        log.append("first")

    async def second(ctx: Context) -> None:
        log.append("second")

    seq = Sequence("seq", [FuncStep("first", first), FuncStep("second", second)])
    await seq(make_context(make_request(yield_between_steps=yielding)))

    expected = ["first", "other work", "second"] if yielding else ["first", "second"]
    assert log == expected


async def test_sequence_stops_at_a_fail_closed_failure_and_goes_on_after_fail_open() -> None:
    log: list[str] = []
    seq = Sequence(
        "seq",
        [
            guard(RecordingStep("optional", error=ConnectionError(), log=log), Policy(fail_open=True)),
            RecordingStep("required", error=ConnectionError(), log=log),
            RecordingStep("never", log=log),
        ],
    )
    ctx = make_context()
    with pytest.raises(DependencyFailure) as caught:
        await seq(ctx)
    assert caught.value.step == "required"
    assert log == ["optional", "required"]


# --- parallel ---------------------------------------------------------------------------------------------


async def test_fail_open_branch_failure_leaves_siblings_running_to_completion() -> None:
    slow = GateStep("network", writes={A: "posts"})
    failed = asyncio.Event()

    async def broken(ctx: Context) -> None:
        failed.set()
        raise ConnectionError("jobs backend down")

    par = Parallel(
        "sources",
        [
            guard(slow, Policy(fail_open=True)),
            guard(FuncStep("jobs", broken, writes=[B]), Policy(fail_open=True)),
        ],
    )
    ctx = make_context()
    task = asyncio.create_task(par(ctx))
    await slow.started.wait()
    await failed.wait()
    # The failure is recorded synchronously once the branch raised; the sibling is untouched.
    assert [f.reason for f in ctx.failures] == ["jobs: dependency"]
    assert not task.done()

    slow.release.set()
    await task

    assert not slow.cancelled.is_set()
    assert ctx.get(A) == "posts"
    assert not ctx.has(B)
    assert ctx.degraded
    assert ctx.trace.by_name("network").outcome is Outcome.OK
    assert ctx.trace.by_name("jobs").outcome is Outcome.FAILED_OPEN


async def test_fail_closed_branch_failure_cancels_siblings_and_raises_its_error() -> None:
    sibling = GateStep("network")
    other = GateStep("trending")

    async def broken(ctx: Context) -> None:
        await sibling.started.wait()
        await other.started.wait()
        raise ConnectionError("features store down")

    par = Parallel(
        "fanout",
        [sibling, guard(FuncStep("features", broken), Policy()), guard(other, Policy(fail_open=True))],
    )
    ctx = make_context()
    # Safety net only: if the failure did not cancel the siblings, this would wait forever.
    async with asyncio.timeout(5.0):
        with pytest.raises(DependencyFailure) as caught:
            await par(ctx)

    assert caught.value.step == "features"
    assert sibling.cancelled.is_set()  # their cleanup ran before the parallel raised
    assert other.cancelled.is_set()  # fail-open does not protect a branch from a sibling failing closed
    outcomes = {e.name: e.outcome for e in ctx.trace.entries}
    assert outcomes == {"features": Outcome.FAILED, "network": Outcome.CANCELLED, "trending": Outcome.CANCELLED}
    assert not ctx.degraded


async def test_each_branch_runs_under_its_own_timeout() -> None:
    fast = GateStep("fast", writes={A: 1})
    stuck = GateStep("stuck", writes={B: 2})
    par = Parallel(
        "sources",
        [guard(fast, Policy(timeout_s=30.0)), guard(stuck, Policy(timeout_s=0.01, fail_open=True))],
    )
    ctx = make_context()
    task = asyncio.create_task(par(ctx))
    await fast.started.wait()
    await stuck.cancelled.wait()  # cut by its own 10 ms timeout while `fast` still waits
    assert not task.done()
    fast.release.set()
    await task

    assert ctx.get(A) == 1
    assert not ctx.has(B)
    assert ctx.trace.by_name("stuck").outcome is Outcome.TIMED_OUT
    assert [f.reason for f in ctx.failures] == ["stuck: timeout"]


async def test_request_deadline_caps_a_generous_branch_timeout() -> None:
    stuck = GateStep("stuck")
    par = Parallel("sources", [guard(stuck, Policy(timeout_s=10.0, fail_open=True)), RecordingStep("quick")])
    ctx = make_context(timeout_s=0.05)

    async with asyncio.timeout(5.0):  # a 10 s wait would be a failure, not a hang
        await par(ctx)

    entry = ctx.trace.by_name("stuck")
    assert entry.outcome is Outcome.TIMED_OUT
    assert "own timeout 10000 ms" in entry.detail
    assert entry.budget_left_ms is not None
    assert entry.budget_left_ms < 1.0  # cut at the request deadline, not 10 s later
    assert ctx.trace.by_name("quick").outcome is Outcome.OK


async def test_composite_timeout_narrows_the_budget_of_its_branches() -> None:
    stuck = GateStep("stuck")
    fine = RecordingStep("fine", writes={A: 1})
    par = guard(Parallel("sources", [guard(stuck, Policy(fail_open=True)), fine]), Policy(timeout_s=0.01))
    ctx = make_context(timeout_s=30.0)

    await par(ctx)

    # The branch timed out at the group's 10 ms and failed open; the group itself succeeded.
    assert ctx.trace.by_name("stuck").outcome is Outcome.TIMED_OUT
    assert ctx.trace.by_name("sources").outcome is Outcome.OK
    narrowed, request = fine.seen[0].budget.deadline_s, ctx.budget.deadline_s
    assert narrowed is not None
    assert request is not None
    assert narrowed < request - 29.0


async def test_cancelling_the_parallel_cancels_and_awaits_every_branch() -> None:
    cleanup_may_finish = asyncio.Event()
    cleaned: list[str] = []

    async def slow_cleanup(ctx: Context) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await cleanup_may_finish.wait()  # cleanup that itself takes a while
            cleaned.append("slow")
            raise

    gate = GateStep("gate")
    started = asyncio.Event()

    async def start(ctx: Context) -> None:
        started.set()
        await slow_cleanup(ctx)

    par = guard(Parallel("sources", [FuncStep("slow", start), gate]))
    ctx = make_context()
    task = asyncio.create_task(par(ctx))
    await gate.started.wait()
    await started.wait()

    task.cancel()
    cleanup_may_finish.set()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert cleaned == ["slow"]
    assert gate.cancelled.is_set()
    names = [e.name for e in ctx.trace.entries]
    # Every branch finished cancelling before the parallel itself was recorded (no orphan tasks).
    assert set(names[:2]) == {"slow", "gate"}
    assert names[2] == "sources"
    assert all(e.outcome is Outcome.CANCELLED for e in ctx.trace.entries)


async def test_branches_write_concurrently_into_the_shared_context() -> None:
    par = Parallel("p", [RecordingStep("x", writes={A: 1}), RecordingStep("y", writes={B: 2})])
    ctx = make_context()
    await par(ctx)
    assert (ctx.get(A), ctx.get(B)) == (1, 2)
    assert par.writes == {A, B}


def test_empty_composites_are_rejected() -> None:
    with pytest.raises(ValueError, match="no branches"):
        Parallel("p", [])
    with pytest.raises(ValueError, match="no steps"):
        Sequence("s", [])
    with pytest.raises(ValueError, match="no cases"):
        Switch("w", ContextSelector("x"), {})


# --- switch -----------------------------------------------------------------------------------------------


def _blend_switch(selector: SlotSelector | ContextSelector | RequestSelector, *, default: bool = True) -> Switch:
    cases = {"a": RecordingStep("blend_a", writes={C: "a"}), "b": RecordingStep("blend_b", writes={C: "b"})}
    fallback = RecordingStep("blend_default", writes={C: "default"}) if default else None
    return Switch("blend_by_bucket", selector, cases, fallback)


async def test_switch_on_a_slot_picks_the_case() -> None:
    ctx = make_context()
    ctx.set(BUCKET, "b")
    switch = _blend_switch(SlotSelector(BUCKET))
    await switch(ctx)
    assert ctx.get(C) == "b"
    assert switch.reads == {BUCKET}
    skipped = [e for e in ctx.trace.entries if e.outcome is Outcome.SKIPPED]
    assert {e.name for e in skipped} == {"blend_a", "blend_default"}
    assert "slot.bucket = 'b'" in skipped[0].detail


@pytest.mark.parametrize(
    ("context", "expected"), [({"bucket": "a"}, "a"), ({"bucket": "zz"}, "default"), ({}, "default")]
)
async def test_switch_on_request_context_falls_back_to_default(context: dict[str, str], expected: str) -> None:
    ctx = make_context(make_request(context=context))
    await _blend_switch(ContextSelector("bucket"))(ctx)
    assert ctx.get(C) == expected


async def test_switch_on_a_request_field() -> None:
    switch = Switch(
        "by_debug",
        RequestSelector("debug"),
        {
            "true": RecordingStep("explain", writes={C: "explained"}),
            "false": RecordingStep("plain", writes={C: "plain"}),
        },
    )
    ctx = make_context(make_request(debug=True))
    await switch(ctx)
    assert ctx.get(C) == "explained"
    assert switch.selector.domain == frozenset({"true", "false"})


@pytest.mark.parametrize("attached", ["quality", "caller_gone", "yield_between_steps", "context"])
def test_a_switch_cannot_route_on_what_the_gateway_attaches_to_a_request(attached: str) -> None:
    with pytest.raises(ValueError, match=f"unknown request field '{attached}'"):
        RequestSelector(attached)


async def test_switch_without_default_on_an_unserved_request_value_is_a_client_error() -> None:
    ctx = make_context(make_request(context={"bucket": "zz"}))
    with pytest.raises(InvalidRequest, match=r"no case for request\.context\.bucket = 'zz'") as caught:
        await _blend_switch(ContextSelector("bucket"), default=False)(ctx)
    assert caught.value.category is Category.CLIENT


async def test_switch_without_default_on_an_unknown_slot_value_is_our_bug() -> None:
    ctx = make_context()
    ctx.set(BUCKET, "zz")
    with pytest.raises(WorkflowError) as caught:
        await _blend_switch(SlotSelector(BUCKET), default=False)(ctx)
    assert caught.value.category is Category.INTERNAL
    assert caught.value.step == "blend_by_bucket"


class Tier(enum.Enum):
    FREE = "free"
    PREMIUM = "premium"


async def test_switch_on_an_enum_slot_uses_its_values_and_knows_its_domain() -> None:
    tier: Key[Tier] = Key("tier", Tier)
    selector = SlotSelector(tier)
    assert selector.domain == frozenset({"free", "premium"})
    switch = Switch("by_tier", selector, {"free": RecordingStep("f", writes={C: 1}), "premium": RecordingStep("p")})
    ctx = make_context()
    ctx.set(tier, Tier.FREE)
    await switch(ctx)
    assert ctx.get(C) == 1


async def test_arm_failure_propagates_through_the_switch() -> None:
    ctx = make_context(make_request(context={"bucket": "a"}))
    switch = Switch("s", ContextSelector("bucket"), {"a": guard(GateStep("slow"), Policy(timeout_s=0.01))})
    with pytest.raises(StepTimeout) as caught:
        await switch(ctx)
    assert caught.value.step == "slow"
