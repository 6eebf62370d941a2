"""The Step protocol: the unit every workflow is made of."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from remix.context import Context
from remix.keys import Key


@runtime_checkable
class Step(Protocol):
    """An async unit of a workflow.

    `reads` must be written by an earlier step; `optional_reads` may be missing (their producer may have
    failed open); `writes` are set by this step when it succeeds. Steps hold ranking logic only: timeouts,
    fallbacks, tracing and metrics are added by the executor's wrappers.
    """

    name: str
    reads: frozenset[Key[Any]]
    optional_reads: frozenset[Key[Any]]
    writes: frozenset[Key[Any]]

    async def __call__(self, ctx: Context) -> None: ...


@runtime_checkable
class Composite(Step, Protocol):
    """A step made of other steps (sequence, parallel, switch).

    A composite runs each child through `remix.wrappers.guard`, so every leaf enforces the deadline
    itself; the wrapper around a composite therefore narrows the budget it passes down but sets no timer
    of its own (two timers on one deadline would race). `children()` lists the direct children, in order.
    """

    def children(self) -> tuple[Step, ...]: ...
