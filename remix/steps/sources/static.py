"""`source.static`: one list for every member (trending, editorial picks), read from the store at start
and refreshed at an interval in the background — never per request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from features.registry import ViewFeature
from kvstore.base import EmbeddingStore
from remix.context import Context
from remix.keys import Key
from remix.registry import StepType
from remix.steps.scoring import resolve_features
from remix.steps.services import Services
from remix.steps.sources._base import I64, DeclaredSource, Retriever, SourceParams, unique_in_order

log = logging.getLogger(__name__)


class StaticParams(SourceParams):
    """`list`: an id-list feature; `key`: the id of the row holding the list; `refresh_s`: how often the
    current version is read again (a failed refresh keeps serving the last list, logged)."""

    list: str = Field(min_length=1)
    key: int = 0
    refresh_s: float = Field(default=60.0, gt=0)


class StaticList:
    """The list in memory, refreshed by a background task; a `Resource` (started before serving)."""

    def __init__(self, step: str, params: StaticParams, services: Services) -> None:
        (feature,) = resolve_features(services, [params.list], step=step)
        if not isinstance(feature, ViewFeature) or not feature.is_ids:
            raise ValueError(f"step {step!r}: list {params.list!r} must be a stored id-list feature")
        self.name = f"{step}:{params.list}"
        self._feature = feature
        self._store: EmbeddingStore = services.stores[feature.view.store]
        self._key = np.array([params.key], dtype=np.int64)
        self._refresh_s = params.refresh_s
        self.ids: I64 = np.empty(0, np.int64)
        self.version: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name=f"refresh {self.name}")

    async def refresh(self) -> None:
        table = self._feature.view.table
        versions = await self._store.current_versions([table])
        if table not in versions:
            raise LookupError(f"{self.name}: table {table!r} has no current version")
        if versions[table] == self.version:
            return
        lookup = await self._store.lookup(table, self._key, version=versions[table], timeout_s=None)
        start = self._feature.start
        row = np.asarray(lookup.vectors[0, start : start + self._feature.width], dtype=np.int64)
        # Padding and repeats dropped here, once per refresh, not per request.
        self.ids = unique_in_order(row, len(row)) if lookup.found[0] else np.empty(0, np.int64)
        self.version = versions[table]

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("%s: refresh failed, serving version %s: %s", self.name, self.version, error)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class StaticRetriever:
    reads: frozenset[Key[Any]] = frozenset()
    tables: frozenset[str] = frozenset()  # the list is refreshed in the background at the current version

    def __init__(self, static: StaticList) -> None:
        self._static = static

    async def retrieve(self, ctx: Context, *, limit: int) -> I64:
        return self._static.ids[:limit]


def _build(name: str, params: StaticParams, services: Services) -> DeclaredSource:
    static = StaticList(name, params, services)
    services.resources.add(static)
    return DeclaredSource(name, params, services, StaticRetriever(static))


STATIC = StepType("source.static", StaticParams, _build)


if TYPE_CHECKING:  # mypy proves the protocol is met, so drift fails CI rather than a workflow
    _conforms: type[Retriever] = StaticRetriever
