"""Admission control: an adaptive number of requests in flight, none for a caller already gone, and none
once draining starts.

The event loop is single-threaded, so plain counters are exact; rejection is immediate, never queued.
Every check runs before the first await of the request, so a refused call costs no work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from gateway.concurrency_limit import AdaptiveLimit, LimitSettings
from gateway.metrics import GatewayMetrics
from gateway.quality import FULL_QUALITY, QualityGovernor, QualitySettings
from gateway.settings import GatewaySettings
from gateway.status import RequestRejected, deadline_expired_on_arrival, overloaded, unavailable
from remix.budget import Clock
from remix.failures import Category, classify


class Caller(Protocol):
    """What admission reads of a call (a `grpc.aio.ServicerContext` is one)."""

    def time_remaining(self) -> float | None: ...

    def cancelled(self) -> bool: ...


@dataclass(frozen=True)
class Ticket:
    """An admitted request. `quality`: the width of its second pass, 1.0 = full (see `gateway.quality`).
    `yield_between_steps`: it runs alone (calls past `overload_max_active_calls` are refused by grpc), so
    between its steps it lets the loop take, and refuse, the calls that arrive meanwhile (see
    `FeedRequest.yield_between_steps`)."""

    quality: float = FULL_QUALITY
    yield_between_steps: bool = False


class Admission:
    """`max_in_flight` is the fixed ceiling; `limit` (default: fixed at the ceiling) adapts below it;
    `quality` (default: always full) narrows admitted requests before the limit rejects any."""

    def __init__(
        self,
        max_in_flight: int,
        metrics: GatewayMetrics,
        *,
        limit: LimitSettings | None = None,
        quality: QualitySettings | None = None,
        yield_between_steps: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        if limit is None:
            # min == max: a fixed limit, whatever the latency target says.
            limit = LimitSettings(max_in_flight, max_in_flight, max_in_flight, target_latency_s=1.0)
        elif limit.max_limit != max_in_flight:
            raise ValueError(f"limit.max_limit ({limit.max_limit}) must be max_in_flight ({max_in_flight})")
        self._limit = AdaptiveLimit(limit, clock)
        self._quality = QualityGovernor(quality) if quality is not None else None
        self._clock = clock
        self._yield_between_steps = yield_between_steps
        self._metrics = metrics
        self._draining = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @classmethod
    def from_settings(cls, settings: GatewaySettings, metrics: GatewayMetrics) -> Admission:
        """Admission as the `# overload` settings declare it."""
        limit = LimitSettings(
            min_limit=min(settings.overload_min_limit, settings.max_in_flight),
            max_limit=settings.max_in_flight,
            initial_limit=settings.overload_initial_limit,
            target_latency_s=settings.overload_target_latency_s,
        )
        quality = QualitySettings(
            target_latency_s=settings.overload_quality_latency_s,
            narrowed_quality=settings.overload_narrowed_quality,
        )
        return cls(
            settings.max_in_flight,
            metrics,
            limit=limit,
            quality=quality,
            yield_between_steps=settings.overload_max_active_calls is not None,
        )

    @property
    def in_flight(self) -> int:
        return self._limit.in_flight

    @property
    def limit(self) -> int:
        """The concurrency limit now (adaptive, at most `max_in_flight`)."""
        return self._limit.limit

    @property
    def quality(self) -> float:
        return FULL_QUALITY if self._quality is None else self._quality.quality

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def start_draining(self) -> None:
        self._draining.set()

    async def wait_draining(self) -> None:
        await self._draining.wait()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    @asynccontextmanager
    async def admit(self, caller: Caller | None = None) -> AsyncIterator[Ticket]:
        """Hold a slot for the duration of a request, or raise at once: UNAVAILABLE (draining),
        DEADLINE_EXCEEDED (the caller's deadline already passed), RESOURCE_EXHAUSTED (over the limit).
        A cancelled caller gets `CancelledError`: nobody is listening.

        The request's latency feeds the limit and the quality factor when it ends: a timeout counts as
        congestion, a cancellation as no sample.
        """
        self._refuse_if_unwanted(caller)
        if not self._limit.try_acquire():
            self._metrics.in_flight_rejected.labels("limit").inc()
            raise overloaded(
                f"gateway is at its limit of {self._limit.limit} requests in flight "
                f"(adaptive, ceiling {self._limit.settings.max_limit}); retry with backoff"
            )
        self._idle.clear()
        started_s = self._clock()
        latency_s: float | None = None
        dropped = False
        try:
            yield Ticket(quality=self.quality, yield_between_steps=self._yield_between_steps)
            latency_s = self._clock() - started_s
            if self._quality is not None:
                self._quality.observe(latency_s)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            dropped = _is_timeout(error)
            if not dropped:
                latency_s = self._clock() - started_s
            raise
        finally:
            self._limit.release(latency_s, dropped=dropped)
            if self._limit.in_flight == 0:
                self._idle.set()

    def _refuse_if_unwanted(self, caller: Caller | None) -> None:
        if self._draining.is_set():
            self._metrics.in_flight_rejected.labels("draining").inc()
            raise unavailable("gateway is draining for shutdown; retry on another replica")
        if caller is None:
            return
        if caller.cancelled():
            self._metrics.in_flight_rejected.labels("cancelled").inc()
            raise asyncio.CancelledError("the caller cancelled before admission")
        remaining_s = caller.time_remaining()
        if remaining_s is not None and remaining_s <= 0:
            self._metrics.in_flight_rejected.labels("deadline").inc()
            raise deadline_expired_on_arrival()


def _is_timeout(error: Exception) -> bool:
    if isinstance(error, RequestRejected):
        return False  # refused by the gateway's own checks: says nothing about service time
    return classify(error) is Category.TIMEOUT
