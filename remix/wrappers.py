"""The one wrapper every step runs in: deadline, classification, fail-open, fallback and trace.

Applied once, when a workflow is built (`guard`), never per request. Step bodies hold ranking logic only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from opentelemetry import trace as otel

from remix import spans
from remix.context import Context
from remix.failures import Category, DependencyFailure, Failure, StepTimeout, WorkflowError, classify
from remix.keys import Key
from remix.policy import Policy
from remix.step import Composite, Step
from remix.trace import Outcome, TraceEntry

logger = logging.getLogger(__name__)

_DEFAULT = Policy()


def guard(step: Step, policy: Policy | None = None) -> Guarded:
    """`step` under `policy` (default: no own timeout, fail closed, no fallback).

    Idempotent for the default policy: an already guarded step is returned as is, so composites can guard
    every child without stacking wrappers. A guarded step with the default policy is re-wrapped with the
    new policy instead of nested.
    """
    policy = _DEFAULT if policy is None else policy
    if isinstance(step, Guarded):
        if policy.is_default:
            return step
        if step.policy.is_default:
            return Guarded(step.inner, policy)
    return Guarded(step, policy)


class Guarded:
    """Runs `inner` under a `Policy` and records one trace entry for it, in completion order.

    Contract, per call:
    - Not started when the enclosing budget is already spent or the caller is gone: that is a timeout.
    - The inner step sees a context whose budget ends at min(now + policy.timeout_s, enclosing deadline).
      A leaf step is cut (cancelled) there; a composite is not timed itself, its guarded children are.
    - OK: entry OK. Failure with a fallback that answers: entry FELL_BACK and the request is degraded.
    - Failure otherwise, fail open: entry TIMED_OUT (timeouts) or FAILED_OPEN, `ctx.degrade(...)`, and the
      call returns normally without the step's writes.
    - Failure otherwise, fail closed: entry TIMED_OUT or FAILED, and a `WorkflowError` is raised:
      `StepTimeout`, `DependencyFailure`, the step's own `WorkflowError`, or `WorkflowError(INTERNAL)`
      for anything else; the original exception is its `__cause__`.
    - Cancellation: entry CANCELLED, and the `CancelledError` propagates (never swallowed).

    Programmer errors (category INTERNAL: any exception that is not a known dependency, timeout or
    workflow error) honour `fail_open` too: an optional source with a bug must not take the whole feed
    down. They are never silent: each is logged once, with its traceback, at ERROR level where it is first
    classified, and it stays visible in the trace and in `ctx.failures` as category `internal`.
    """

    def __init__(self, inner: Step, policy: Policy | None = None) -> None:
        self.inner = inner
        self.policy = _DEFAULT if policy is None else policy
        self.fallback: Guarded | None = None if self.policy.fallback is None else guard(self.policy.fallback)
        self.name = inner.name
        alternatives: tuple[Step, ...] = (inner,) if self.fallback is None else (inner, self.fallback)
        self.reads: frozenset[Key[Any]] = frozenset().union(*(s.reads for s in alternatives))
        self.optional_reads: frozenset[Key[Any]] = (
            frozenset().union(*(s.optional_reads for s in alternatives)) - self.reads
        )
        self.writes: frozenset[Key[Any]] = frozenset().union(*(s.writes for s in alternatives))
        # Only leaves set a timer: a composite's children are guarded and cut themselves, and a second
        # timer on the same deadline would race with theirs.
        self._timed = not isinstance(inner, (Guarded, Composite))
        self._span_name = f"step {self.name}"
        self._span_attributes = {"quasar.step": self.name}

    def __repr__(self) -> str:
        return f"Guarded({self.inner!r}, {self.policy!r})"

    async def __call__(self, ctx: Context) -> None:
        with spans.span(self._span_name, self._span_attributes, on=ctx.tracing):
            await self._guarded_call(ctx)

    async def _guarded_call(self, ctx: Context) -> None:
        started_s = ctx.budget.clock()
        note = ""
        try:
            error = await self._run_inner(ctx)
            if error is None:
                self._record(ctx, Outcome.OK, started_s)
                return
            self._log_if_bug(error)
            if self.fallback is not None:
                fallback_error = await _attempt(self.fallback, ctx)
                if fallback_error is None:
                    ctx.degrade(Failure.of(self.name, error))
                    detail = f"{_describe(error)}; fallback {self.fallback.name!r} answered"
                    self._record(ctx, Outcome.FELL_BACK, started_s, detail)
                    return
                note = f"; fallback {self.fallback.name!r} failed too: {_describe(fallback_error)}"
        except asyncio.CancelledError:
            self._record(ctx, Outcome.CANCELLED, started_s, "cancelled")
            raise
        self._fail(ctx, error, started_s, note)

    async def _run_inner(self, ctx: Context) -> Exception | None:
        """Run the inner step under its budget; the exception it failed with, or None."""
        if ctx.budget.expired():
            return StepTimeout("not started: the request budget is spent", step=self.name)
        if ctx.request.caller_gone():
            # Nobody waits for the answer: the work would be thrown away. A timeout, like a spent budget.
            return StepTimeout("not started: the caller is gone (cancelled)", step=self.name)
        timeout_s = self.policy.timeout_s
        scoped = ctx if timeout_s is None else ctx.with_budget(ctx.budget.child(timeout_s))
        limit_s = scoped.budget.remaining_s() if self._timed else None
        timer = asyncio.timeout(limit_s)
        try:
            async with timer:
                await self.inner(scoped)
        except TimeoutError as error:
            if not timer.expired():
                return error  # the step's own timeout (e.g. a backend call): classified like any error
            own = "none" if timeout_s is None else f"{timeout_s * 1000:.0f} ms"
            timeout = StepTimeout(
                f"did not finish within {_ms(limit_s)} (own timeout {own}, capped by the request deadline)",
                step=self.name,
            )
            timeout.__cause__ = error
            return timeout
        except Exception as error:
            return error
        return None

    def _fail(self, ctx: Context, error: Exception, started_s: float, note: str) -> None:
        category = classify(error)
        detail = _describe(error) + note
        if category is Category.TIMEOUT:
            outcome = Outcome.TIMED_OUT
        else:
            outcome = Outcome.FAILED_OPEN if self.policy.fail_open else Outcome.FAILED
        if self.policy.fail_open:
            ctx.degrade(Failure.of(self.name, error))
            self._record(ctx, outcome, started_s, "failed open: " + detail)
            return
        self._record(ctx, outcome, started_s, detail)
        translated = self._translate(error, category)
        if translated is error:
            raise error
        raise translated from error

    def _translate(self, error: Exception, category: Category) -> WorkflowError:
        if isinstance(error, WorkflowError):
            if error.step is None:
                error.step = self.name
            return error
        message = str(error) or type(error).__name__
        if category is Category.TIMEOUT:
            return StepTimeout(message, step=self.name)
        if category is Category.DEPENDENCY:
            return DependencyFailure(message, step=self.name)
        return WorkflowError(f"{type(error).__name__}: {message}", category=category, step=self.name)

    def _log_if_bug(self, error: Exception) -> None:
        # Logged once, where first classified: an outer wrapper sees a WorkflowError and stays quiet.
        if classify(error) is Category.INTERNAL and not isinstance(error, WorkflowError):
            handling = "failing open" if self.policy.fail_open else "failing closed"
            if self.fallback is not None:
                handling = f"trying fallback {self.fallback.name!r}"
            logger.error("step %r raised a programming error (%s)", self.name, handling, exc_info=error)

    def _record(self, ctx: Context, outcome: Outcome, started_s: float, detail: str = "") -> None:
        span = otel.get_current_span()
        if span.is_recording():
            span.set_attribute("quasar.outcome", outcome.value)
            if outcome is not Outcome.OK:
                span.set_status(otel.Status(otel.StatusCode.ERROR, detail))
        left_s = ctx.budget.remaining_s()
        note = ctx.notes.pop(self.name, "")
        if outcome is Outcome.OK and note:
            detail = note
        ctx.trace.record(
            TraceEntry(
                name=self.name,
                outcome=outcome,
                elapsed_ms=(ctx.budget.clock() - started_s) * 1000.0,
                budget_left_ms=None if left_s is None else left_s * 1000.0,
                detail=detail,
            )
        )


async def _attempt(step: Step, ctx: Context) -> Exception | None:
    """Run an already guarded step; the exception it failed with, or None. Cancellation propagates."""
    try:
        await step(ctx)
    except Exception as error:
        return error
    return None


def _describe(error: BaseException) -> str:
    return f"{classify(error).value}: {str(error) or type(error).__name__}"


def _ms(seconds: float | None) -> str:
    return "no limit" if seconds is None else f"{seconds * 1000:.0f} ms"
