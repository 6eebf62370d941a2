"""Admission control: a bounded number of requests in flight, and none once draining starts.

The event loop is single-threaded, so a plain counter is exact; rejection is immediate, never queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.metrics import GatewayMetrics
from gateway.status import overloaded, unavailable


class Admission:
    def __init__(self, max_in_flight: int, metrics: GatewayMetrics) -> None:
        self._max_in_flight = max_in_flight
        self._metrics = metrics
        self._in_flight = 0
        self._draining = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

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
    async def admit(self) -> AsyncIterator[None]:
        """Hold a slot for the duration of a request; raises RESOURCE_EXHAUSTED or UNAVAILABLE instead."""
        if self._draining.is_set():
            self._metrics.in_flight_rejected.labels("draining").inc()
            raise unavailable("gateway is draining for shutdown; retry on another replica")
        if self._in_flight >= self._max_in_flight:
            self._metrics.in_flight_rejected.labels("limit").inc()
            raise overloaded(f"gateway is at its limit of {self._max_in_flight} requests in flight")
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
