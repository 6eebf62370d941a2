"""Runs a workflow for one request under one deadline."""

from __future__ import annotations

import time

from remix.budget import Budget, Clock
from remix.context import NO_RELEASE, Context, Serving
from remix.request import FeedRequest
from remix.workflow import Workflow


def request_timeout_s(workflow: Workflow, timeout_s: float | None) -> float | None:
    """The request's budget: the shorter of the caller's timeout and the workflow's default; None if neither."""
    limits = [t for t in (timeout_s, workflow.default_timeout_s) if t is not None]
    return min(limits) if limits else None


def new_context(
    workflow: Workflow,
    request: FeedRequest,
    *,
    timeout_s: float | None = None,
    clock: Clock = time.monotonic,
    serving: Serving = NO_RELEASE,
) -> Context:
    """A fresh context for `request`, its budget starting now on `clock` (see `request_timeout_s`), served
    by `serving` (the release snapshot the request keeps to its end)."""
    return Context(
        request=request, budget=Budget.from_timeout(request_timeout_s(workflow, timeout_s), clock), serving=serving
    )


async def execute(workflow: Workflow, ctx: Context) -> None:
    """Run `workflow` on `ctx`. Use it (with `new_context`) when the trace is wanted even on failure.

    Every step's limit derives from `ctx.budget`; leaves are cut at their deadline. Raises a
    `WorkflowError` when a fail-closed step fails: `StepTimeout` (category TIMEOUT) when it ran out of
    time or the budget was spent before it started, `InvalidRequest` (CLIENT), `DependencyFailure`
    (DEPENDENCY), or `WorkflowError` with category INTERNAL. Cancellation propagates as `CancelledError`
    once every running step has been cancelled and recorded as CANCELLED.
    """
    await workflow.root(ctx)


async def run_workflow(
    workflow: Workflow,
    request: FeedRequest,
    *,
    timeout_s: float | None = None,
    clock: Clock = time.monotonic,
    serving: Serving = NO_RELEASE,
) -> Context:
    """Run `workflow` for `request`; the context holds the slots, `failures` (degraded) and the trace.

    `timeout_s` is the caller's deadline in seconds from now (None: only the workflow's default).
    Raises as `execute` does.
    """
    ctx = new_context(workflow, request, timeout_s=timeout_s, clock=clock, serving=serving)
    await execute(workflow, ctx)
    return ctx
