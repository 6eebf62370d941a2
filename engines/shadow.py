"""Shadow calls: a route's shadow targets get a copy of its traffic, in the background, bounded."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from engines.breaker import CircuitOpen
from engines.errors import EngineError, EngineTimeout
from engines.route_metrics import RouteMetrics

log = logging.getLogger(__name__)


class ShadowCalls:
    """Runs shadow calls as background tasks; their results are discarded, their outcomes counted.

    The caller never awaits a shadow call, so it cannot change an answer or wait for one; what it does
    cost is a task on the same event loop. Per logical model at most `bound` calls run at once (the
    count survives route swaps, so a swap cannot double it); `submit` beyond that drops the call and
    counts it as `dropped`. Outcomes: ok, timeout, error, dropped, breaker_open (see `RouteMetrics`).
    """

    def __init__(self, metrics: RouteMetrics) -> None:
        self._metrics = metrics
        self._in_flight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    def in_flight(self, model: str) -> int:
        return self._in_flight[model]

    def submit(self, model: str, target: str, bound: int, call: Callable[[], Awaitable[object]]) -> bool:
        """Start `call()` in the background unless `model` already has `bound` running; True if started."""
        if self._in_flight[model] >= bound:
            self._metrics.shadow.labels(model, target, "dropped").inc()
            return False
        self._in_flight[model] += 1
        task = asyncio.create_task(self._run(model, target, call), name=f"shadow {model} -> {target}")
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)
        return True

    async def join(self) -> None:
        """Wait until the shadow calls running now have finished (tests wait on this, never on sleeps)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancel every running shadow call and wait for them to end."""
        for task in self._tasks:
            task.cancel()
        await self.join()

    async def _run(self, model: str, target: str, call: Callable[[], Awaitable[object]]) -> None:
        outcome: str | None = None
        try:
            await call()
            outcome = "ok"
        except CircuitOpen:
            outcome = "breaker_open"
        except EngineTimeout:
            outcome = "timeout"
        except EngineError:
            outcome = "error"
        except Exception:  # a bug must not vanish with the task, nor reach anyone's answer: log it loudly
            log.exception("shadow call failed unexpectedly", extra={"model": model, "target": target})
            outcome = "error"
        finally:
            self._in_flight[model] -= 1
            if outcome is not None:  # None: cancelled (router closing), not a shadow outcome
                self._metrics.shadow.labels(model, target, outcome).inc()
