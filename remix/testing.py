"""Fakes and helpers for testing steps and workflows: no sleeps, no sockets.

Time: a `ManualClock` drives `Budget` arithmetic (what a step sees as remaining), while the event loop's
own timers still enforce deadlines, so a test that wants a timeout uses a `GateStep` that never gets
released and a small real budget; everything else waits on events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from remix.budget import Budget, Clock
from remix.context import Context
from remix.keys import Key
from remix.request import FeedRequest


class ManualClock:
    """A monotonic clock that moves only when told to (seconds)."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        self.now_s += seconds


def make_request(**overrides: Any) -> FeedRequest:
    """A valid request (member 1, 10 items, workflow 'feed'), with any field overridden."""
    fields: dict[str, Any] = {"request_id": "test", "member_id": 1, "count": 10}
    fields.update(overrides)
    return FeedRequest(**fields)


def make_context(
    request: FeedRequest | None = None, timeout_s: float | None = None, clock: Clock | None = None
) -> Context:
    """A fresh context; its budget starts now on `clock` (real monotonic time when None)."""
    budget = Budget.from_timeout(timeout_s) if clock is None else Budget.from_timeout(timeout_s, clock)
    return Context(request=request or make_request(), budget=budget)


class FuncStep:
    """A step from an async function, with the keys it declares."""

    def __init__(
        self,
        name: str,
        fn: Callable[[Context], Awaitable[None]],
        *,
        reads: Iterable[Key[Any]] = (),
        optional_reads: Iterable[Key[Any]] = (),
        writes: Iterable[Key[Any]] = (),
    ) -> None:
        self.name = name
        self.reads: frozenset[Key[Any]] = frozenset(reads)
        self.optional_reads: frozenset[Key[Any]] = frozenset(optional_reads)
        self.writes: frozenset[Key[Any]] = frozenset(writes)
        self._fn = fn

    async def __call__(self, ctx: Context) -> None:
        await self._fn(ctx)


class RecordingStep:
    """Writes fixed values, or raises `error`; appends its name to `log` (shared across steps to check
    order) and remembers every context it saw in `seen`."""

    def __init__(
        self,
        name: str,
        *,
        writes: Mapping[Key[Any], Any] | None = None,
        reads: Iterable[Key[Any]] = (),
        optional_reads: Iterable[Key[Any]] = (),
        error: BaseException | None = None,
        log: list[str] | None = None,
    ) -> None:
        self.name = name
        self.values: dict[Key[Any], Any] = dict(writes or {})
        self.reads: frozenset[Key[Any]] = frozenset(reads)
        self.optional_reads: frozenset[Key[Any]] = frozenset(optional_reads)
        self.writes: frozenset[Key[Any]] = frozenset(self.values)
        self.error = error
        self.log = log if log is not None else []
        self.seen: list[Context] = []

    @property
    def calls(self) -> int:
        return len(self.seen)

    async def __call__(self, ctx: Context) -> None:
        self.seen.append(ctx)
        self.log.append(self.name)
        if self.error is not None:
            raise self.error
        for key, value in self.values.items():
            ctx.set(key, value)


class GateStep(RecordingStep):
    """Blocks until `release` is set, then behaves like a `RecordingStep`.

    `started` is set when it begins waiting; `cancelled` is set in its cleanup when it is cancelled (the
    `CancelledError` is re-raised). Never released, it ends only by its deadline or cancellation.
    """

    def __init__(
        self,
        name: str,
        *,
        writes: Mapping[Key[Any], Any] | None = None,
        reads: Iterable[Key[Any]] = (),
        optional_reads: Iterable[Key[Any]] = (),
        error: BaseException | None = None,
        log: list[str] | None = None,
    ) -> None:
        super().__init__(name, writes=writes, reads=reads, optional_reads=optional_reads, error=error, log=log)
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, ctx: Context) -> None:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        await super().__call__(ctx)


def key(name: str, type_: type[Any] = object) -> Key[Any]:
    """A key for tests (type defaults to `object`)."""
    return Key(name, type_)
