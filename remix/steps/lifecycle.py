"""Resources steps own beyond a request (refreshed lists, loaded indexes, channels), started and closed
by the application around serving. Constructors do no I/O: `start` does, before readiness turns on."""

from __future__ import annotations

import asyncio
from typing import Protocol


class Resource(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class Resources:
    """The resources of one application, started in registration order and closed in reverse."""

    def __init__(self) -> None:
        self._items: list[Resource] = []
        self._started: list[Resource] = []

    def add(self, resource: Resource) -> None:
        self._items.append(resource)

    def __len__(self) -> int:
        return len(self._items)

    async def start(self) -> None:
        """Start every resource; on a failure, close those already started and re-raise."""
        for resource in self._items:
            try:
                await resource.start()
            except BaseException:
                await self.close()
                raise
            self._started.append(resource)

    async def close(self) -> None:
        started, self._started = self._started, []
        for resource in reversed(started):
            try:
                await resource.close()
            except asyncio.CancelledError:
                raise
            except Exception:
                continue
