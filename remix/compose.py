"""Composition: sequence, parallel fan-out with join, switch, fallback.

Composites are steps, so they nest. Each guards its children once, at construction (`guard` with the
default policy unless the child is already guarded), so every leaf is traced and cut at its deadline.
`reads`/`optional_reads`/`writes` of a composite are the union of its children's, as seen from outside
(what a sequence writes itself is not among its reads); `remix.graph` walks the structure for the
precise rules (order, concurrency, fail-open producers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from remix.context import Context
from remix.failures import Category, InvalidRequest, WorkflowError
from remix.keys import Key
from remix.policy import Policy
from remix.selectors import Selector
from remix.step import Step
from remix.trace import Outcome, TraceEntry
from remix.wrappers import Guarded, guard

_NO_KEYS: frozenset[Key[Any]] = frozenset()


def _union(sets: Iterable[frozenset[Key[Any]]]) -> frozenset[Key[Any]]:
    return _NO_KEYS.union(*sets)


def _check_name(kind: str, name: str) -> None:
    if not name:
        raise ValueError(f"a {kind} needs a non-empty name")


class Sequence:
    """Runs `steps` one after the other; the first failure that is not failed open stops it."""

    def __init__(self, name: str, steps: Iterable[Step]) -> None:
        _check_name("sequence", name)
        self.name = name
        self.steps: tuple[Guarded, ...] = tuple(guard(step) for step in steps)
        if not self.steps:
            raise ValueError(f"sequence {name!r} has no steps")
        reads: set[Key[Any]] = set()
        optional: set[Key[Any]] = set()
        written: set[Key[Any]] = set()
        for step in self.steps:
            reads |= step.reads - written
            optional |= step.optional_reads - written
            written |= step.writes
        self.reads = frozenset(reads)
        self.optional_reads = frozenset(optional - reads)
        self.writes = frozenset(written)

    def children(self) -> tuple[Step, ...]:
        return self.steps

    async def __call__(self, ctx: Context) -> None:
        if not ctx.request.yield_between_steps:  # asked once per sequence, not after every step
            for step in self.steps:
                await step(ctx)
            return
        for index, step in enumerate(self.steps):
            if index:
                await asyncio.sleep(0)  # one loop turn between steps: see FeedRequest.yield_between_steps
            await step(ctx)


class Parallel:
    """Runs `branches` concurrently and joins them.

    Each branch runs under its own policy (pass `guard(step, Policy(...))`; a bare step is fail closed
    with no own timeout). A fail-open branch never raises, so its failure leaves its siblings running. The
    first branch to fail closed cancels the others, waits for them to finish cancelling, and its error is
    raised. When the parallel itself is cancelled, every branch is cancelled and awaited before the
    `CancelledError` propagates: no branch outlives the call. Unlike `asyncio.TaskGroup`, one failure
    cancels siblings only when that branch's policy says fail closed.
    """

    def __init__(self, name: str, branches: Iterable[Step]) -> None:
        _check_name("parallel", name)
        self.name = name
        self.branches: tuple[Guarded, ...] = tuple(guard(branch) for branch in branches)
        if not self.branches:
            raise ValueError(f"parallel {name!r} has no branches")
        self.reads = _union(b.reads for b in self.branches)
        self.optional_reads = _union(b.optional_reads for b in self.branches) - self.reads
        self.writes = _union(b.writes for b in self.branches)

    def children(self) -> tuple[Step, ...]:
        return self.branches

    async def __call__(self, ctx: Context) -> None:
        tasks = [asyncio.create_task(b(ctx), name=f"{self.name}/{b.name}") for b in self.branches]
        try:
            pending: set[asyncio.Task[None]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                failed = [task for task in tasks if task in done and _failed(task)]
                if failed:
                    await _cancel_and_wait(pending)
                    raise self._error_of(failed[0])
        finally:
            try:
                # Branches are still running here only when this call itself is being cancelled.
                await _cancel_and_wait([task for task in tasks if not task.done()])
            finally:
                for task in tasks:
                    if task.done() and not task.cancelled():
                        task.exception()  # mark retrieved: a second failure is already in the trace

    def _error_of(self, task: asyncio.Task[None]) -> BaseException:
        if task.cancelled():
            # A branch cancelled from elsewhere while this parallel was not: a bug, not a client abort.
            return WorkflowError(
                f"branch {task.get_name()!r} was cancelled", category=Category.INTERNAL, step=self.name
            )
        error = task.exception()
        assert error is not None
        return error


def _failed(task: asyncio.Task[None]) -> bool:
    return task.cancelled() or task.exception() is not None


async def _cancel_and_wait(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel `tasks` and wait until each has finished, even if the caller is cancelled meanwhile."""
    pending = set(tasks)
    for task in pending:
        task.cancel()
    interrupted = False
    while pending:
        try:
            _, pending = await asyncio.wait(pending)
        except asyncio.CancelledError:
            interrupted = True  # keep waiting: children must not outlive this call; re-raised below
    if interrupted:
        raise asyncio.CancelledError


class Switch:
    """Runs the case named by `selector(ctx)`, else `default`.

    Arms not taken are recorded as SKIPPED. Arms are alternatives: only one runs per request, so they may
    write the same keys and share step names. A value with no case and no default raises: `InvalidRequest`
    when the selector reads the request (the caller sent a value this workflow does not serve), a
    `WorkflowError` of the selector's category otherwise (a slot written by our own step: a bug). When the
    selector knows every value it can return (`domain`), `remix.graph` rejects a missing case at build time.
    """

    def __init__(self, name: str, selector: Selector, cases: Mapping[str, Step], default: Step | None = None) -> None:
        _check_name("switch", name)
        if not cases:
            raise ValueError(f"switch {name!r} has no cases")
        self.name = name
        self.selector = selector
        self.cases: dict[str, Guarded] = {value: guard(step) for value, step in cases.items()}
        self.default: Guarded | None = None if default is None else guard(default)
        arms = self.children()
        self.reads = _union(a.reads for a in arms) | selector.reads
        self.optional_reads = _union(a.optional_reads for a in arms) - self.reads
        self.writes = _union(a.writes for a in arms)

    def children(self) -> tuple[Step, ...]:
        arms: tuple[Step, ...] = tuple(self.cases.values())
        return arms if self.default is None else (*arms, self.default)

    async def __call__(self, ctx: Context) -> None:
        value = self.selector(ctx)
        arm = None if value is None else self.cases.get(value)
        if arm is None:
            arm = self.default
        if arm is None:
            raise self._unmatched(value)
        self._record_skipped(ctx, arm, value)
        await arm(ctx)

    def _unmatched(self, value: str | None) -> WorkflowError:
        message = (
            f"no case for {self.selector.describe()} = {value!r} "
            f"(cases: {', '.join(sorted(self.cases))}) and no default"
        )
        if self.selector.responsible is Category.CLIENT:
            return InvalidRequest(message, step=self.name)
        return WorkflowError(message, category=self.selector.responsible, step=self.name)

    def _record_skipped(self, ctx: Context, taken: Step, value: str | None) -> None:
        left_s = ctx.budget.remaining_s()
        left_ms = None if left_s is None else left_s * 1000.0
        reason = f"{self.selector.describe()} = {value!r}"
        for case, arm in self.cases.items():
            if arm is not taken:
                detail = f"{reason}: case {case!r} not taken"
                ctx.trace.record(TraceEntry(arm.name, Outcome.SKIPPED, 0.0, left_ms, detail))
        if self.default is not None and self.default is not taken:
            detail = f"{reason}: default not taken"
            ctx.trace.record(TraceEntry(self.default.name, Outcome.SKIPPED, 0.0, left_ms, detail))


class Fallback(Guarded):
    """`primary`, and `fallback` in its place when it fails (error or timeout), with the budget left.

    The same wrapper as `guard(primary, Policy(fallback=fallback))`: one trace entry for the pair
    (FELL_BACK when the fallback answered, which also marks the request degraded), plus the fallback's
    own entry. A `primary` already guarded with only a timeout keeps that timeout. When the fallback fails
    too, `fail_open` decides.
    """

    def __init__(self, primary: Step, fallback: Step, *, timeout_s: float | None = None, fail_open: bool = False):
        if isinstance(primary, Guarded) and primary.policy.fallback is None and not primary.policy.fail_open:
            own_s = primary.policy.timeout_s
            timeout_s = own_s if timeout_s is None else timeout_s if own_s is None else min(own_s, timeout_s)
            primary = primary.inner
        super().__init__(primary, Policy(timeout_s=timeout_s, fail_open=fail_open, fallback=fallback))
