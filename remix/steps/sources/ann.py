"""`source.ann`: nearest neighbours of a member vector among an item table's vectors, through the
approximate index built from the request's pinned version of that table (`quasar index build`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from features.registry import ViewFeature
from kvstore.ann import AnnSearcher
from kvstore.base import EmbeddingStore
from kvstore.errors import TableNotFound
from remix.context import Context
from remix.keys import Key
from remix.registry import StepType
from remix.steps.keys import TABLE_VERSIONS, member_rows_key
from remix.steps.scoring import pinned_versions, resolve_features
from remix.steps.services import DEFAULT_STORE, Services
from remix.steps.sources._base import I64, DeclaredSource, Retriever, SourceParams


class AnnParams(SourceParams):
    """`query`: a float vector feature of a view keyed by the request (e.g. the member's topic vector).
    `table`: the store table the index was built from (its version is the request's); the index returns
    its ids. `max_pending`: searches queued beyond the running one before new ones are refused.
    `inline_max_vectors`: an index of at most this many vectors is searched on the event loop, a larger
    one on the source's search thread (see `AnnSearcher`); 0: always on the thread.
    `exact_max_vectors`: an index of at most this many vectors is searched exactly, by a scan of its
    vectors held in memory: faster than the graph for small tables searched for hundreds of neighbours
    (`AnnIndex.scan_exactly`), and exact; 0: always the graph."""

    query: str = Field(min_length=1)
    table: str = Field(min_length=1)
    max_pending: int = Field(default=32, ge=0)
    inline_max_vectors: int = Field(default=100_000, ge=0)
    exact_max_vectors: int = Field(default=30_000, ge=0)


class _SearcherResource:
    """Loads the index of the table's current version before serving (a missing index fails startup, and
    the first request does not pay for the load), and closes the searcher's thread with the application."""

    def __init__(self, name: str, searcher: AnnSearcher, store: EmbeddingStore, table: str) -> None:
        self.name = name
        self.searcher = searcher
        self._store = store
        self._table = table

    async def start(self) -> None:
        versions = await self._store.current_versions([self._table])
        if self._table in versions:
            try:
                await self.searcher.preload(self._table, versions[self._table])
            except TableNotFound as error:
                raise TableNotFound(
                    f"step {self.name!r}: no ANN index for {self._table}@{versions[self._table]} "
                    f"(build it with `quasar index build --table {self._table}`): {error}",
                    store=self._store.name,
                    table=self._table,
                ) from None

    async def close(self) -> None:
        await self.searcher.close()


class AnnRetriever:
    def __init__(self, step: str, params: AnnParams, services: Services) -> None:
        (feature,) = resolve_features(services, [params.query], step=step)
        if not isinstance(feature, ViewFeature) or feature.is_ids:
            raise ValueError(f"step {step!r}: query {params.query!r} must be a stored float vector feature")
        if services.registry.entities[feature.view.entity].key != "request":
            raise ValueError(f"step {step!r}: query {params.query!r} must belong to a view keyed by the request")
        if services.index_root is None:
            raise ValueError(f"step {step!r}: no index root is configured for ANN indexes")
        self._step = step
        self._feature = feature
        self._table = params.table
        self._row_key = member_rows_key(feature.view.name)
        self.reads: frozenset[Key[Any]] = frozenset({self._row_key, TABLE_VERSIONS})
        self.tables: frozenset[str] = frozenset({params.table})
        self.searcher = AnnSearcher(
            services.index_root,
            name=step,
            max_pending=params.max_pending,
            inline_max_vectors=params.inline_max_vectors,
            exact_max_vectors=params.exact_max_vectors,
        )
        # The store of the indexed table: the view declaring it names it (the default store otherwise).
        store = services.registry.table_stores.get(params.table, DEFAULT_STORE)
        services.resources.add(_SearcherResource(step, self.searcher, services.stores[store], params.table))

    async def retrieve(self, ctx: Context, *, limit: int) -> I64:
        start = self._feature.start
        query = ctx.get(self._row_key)[:, start : start + self._feature.width]
        version = pinned_versions(ctx, (self._table,), step=self._step)[self._table]
        found = await self.searcher.search(
            self._table, version, np.asarray(query, np.float32), limit, timeout_s=ctx.budget.remaining_s()
        )
        ids = found.ids[0]
        return np.asarray(ids[ids >= 0][:limit], dtype=np.int64)  # an index holds each id once; -1 pads a short result


def _build(name: str, params: AnnParams, services: Services) -> DeclaredSource:
    return DeclaredSource(name, params, services, AnnRetriever(name, params, services))


ANN = StepType("source.ann", AnnParams, _build)


if TYPE_CHECKING:  # mypy proves the protocol is met, so drift fails CI rather than a workflow
    _conforms: type[Retriever] = AnnRetriever
