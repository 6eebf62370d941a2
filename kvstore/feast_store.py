"""`FeastRedisStore`: Feast feature views served from Feast's Redis online store by Quasar's own client.

Definitions come from the Feast registry, read once at `start()` (`kvstore.feast_registry`); rows are read
from the layout Feast's materialization writes (`kvstore._feast_layout`), never through Feast's SDK. A
table is a Feast feature view name; its row is the view's features concatenated in schema order.

Request path. `lookup` packs one HMGET per id (the view's feature fields and its `_ts` field) into one
payload with numpy, writes it on a pooled connection and lets hiredis parse the replies as they arrive:
one round trip for all ids. Fixed-width values decode column by column with `np.frombuffer`.

Missing and stale rows. `found` is False where the entity has no hash, lacks a feature of the view or holds
a null value for one, and (with `enforce_ttl`, the default) where the row's event time is older than the
view's ttl at the time of the lookup: Quasar applies the feature defaults to such rows, which is what a
feature view's `max_age_s` means. Feast's own `get_online_features` returns stale rows as they are; with
`enforce_ttl=False` this store does too.

Versions. Feast has no table versions: materialization overwrites rows in place. A table's version is
`<project>-<12 hex digits>` digesting the view's definition as read at start (fields, types, lengths, ttl,
key format), so it changes when a new definition changes how rows are read, and equal definitions give
equal versions in every process. It pins the definition, not the data. A lookup of another version raises
`TableNotFound` (restart the store to pick up a new definition).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from kvstore.base import EmbeddingStore, Lookup, TableInfo, as_ids
from kvstore.config import _StoreConfig
from kvstore.errors import StoreUnavailable, TableNotFound
from kvstore.feast_registry import FeastRepo, FeastView, load_feast_repo

if TYPE_CHECKING:
    from kvstore._feast_layout import ViewLayout
    from kvstore._redis_wire import NodePool


class FeastStoreConfig(_StoreConfig):
    """Feature views of a Feast repository (`repo_path`, with its feature_store.yaml) or of a bare
    registry file (`registry_path`, then `project` and `url` are required), served from Feast's Redis
    online store. `url` overrides the repository's online store connection; `timeout_s` bounds a call
    whose caller passes no timeout; `pool_size` is the connections to the server.

    A `cache` serves rows up to its `ttl_s` old even after a materialization rewrote them: Feast rewrites
    rows in place under one version, so no version change evicts them."""

    kind: Literal["feast"] = "feast"
    repo_path: Path | None = None
    registry_path: Path | None = None
    project: str | None = Field(None, description="the Feast project; default: the repository's")
    url: str | None = Field(None, description="redis://host:port/db; default: the repository's online store")
    enforce_ttl: bool = Field(True, description="rows older than their view's ttl are reported missing")
    pool_size: PositiveInt = 16
    timeout_s: PositiveFloat = 0.1
    connect_timeout_s: PositiveFloat = 0.1

    @model_validator(mode="after")
    def _one_source(self) -> FeastStoreConfig:
        if (self.repo_path is None) == (self.registry_path is None):
            raise ValueError("set exactly one of repo_path (a Feast repository) or registry_path (a registry file)")
        if self.registry_path is not None and not (self.project and self.url):
            raise ValueError("a bare registry_path needs project and url (a registry names no online store)")
        if self.url is not None:
            from kvstore._redis_wire import RedisAddress

            RedisAddress.parse(self.url)
        return self

    def build(self, name: str = "feast") -> EmbeddingStore:
        """The store, not started (no I/O here: the registry is read at start)."""
        return FeastRedisStore(
            partial(load_feast_repo, self.repo_path, registry_path=self.registry_path, project=self.project),
            url=self.url,
            name=name,
            enforce_ttl=self.enforce_ttl,
            pool_size=self.pool_size,
            timeout_s=self.timeout_s,
            connect_timeout_s=self.connect_timeout_s,
        )


@dataclass(frozen=True)
class _Table:
    view: FeastView
    version: str
    layout: ViewLayout


class FeastRedisStore:
    """`EmbeddingStore` over Feast's Redis online store (see the module docstring).

    `definitions` reads the Feast registry (called once, in a worker thread, at `start()`); `url` is the
    Redis server, default the repository's online store; `clock` gives the time in seconds since the
    epoch for ttl checks. A single Redis server only (Feast's `redis_type: redis`).
    """

    def __init__(
        self,
        definitions: Callable[[], FeastRepo],
        *,
        url: str | None = None,
        name: str = "feast",
        enforce_ttl: bool = True,
        pool_size: int = 16,
        timeout_s: float = 0.1,
        connect_timeout_s: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        for label, value in (("timeout_s", timeout_s), ("connect_timeout_s", connect_timeout_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{label} must be a positive number of seconds, got {value}")
        self.name = name
        self._definitions = definitions
        self._url = url
        self._enforce_ttl = enforce_ttl
        self._pool_size = pool_size
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._clock = clock
        self._tables: dict[str, _Table] = {}
        self._unsupported: dict[str, str] = {}
        self._pool: NodePool | None = None
        self.repo: FeastRepo | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the registry, then connect. ValueError when no Redis URL is known or the registry cannot
        be read; `StoreUnavailable` when the server does not answer within the timeouts."""
        from kvstore._feast_layout import ViewLayout
        from kvstore._redis_wire import NodePool, RedisAddress

        repo = await asyncio.to_thread(self._definitions)
        url = self._url or repo.redis_url
        if url is None:
            raise ValueError(f"no Redis URL for Feast project {repo.project!r}: {repo.online_store_problem}")
        address = RedisAddress.parse(url)
        tables = {}
        for view in repo.views.values():
            version = f"{repo.project}-{view.digest(repo.project, repo.entity_key_version)}"
            tables[view.name] = _Table(view, version, ViewLayout(repo.project, view, repo.entity_key_version))
        await self.close()  # a second start reconnects
        pool = NodePool(
            address.host, address.port, address, size=self._pool_size, connect_timeout_s=self._connect_timeout_s
        )
        try:
            async with self._within(self._timeout_s + self._connect_timeout_s, table=""):
                (reply,) = await self._call(pool, b"*1\r\n$4\r\nPING\r\n", 1)
            if reply != b"PONG":  # e.g. NOAUTH: the URL lacks the server's password
                raise StoreUnavailable(f"{address} answered PING with {reply!s}", store=self.name)
        except BaseException:
            pool.close()
            raise
        self.repo, self._tables, self._unsupported, self._pool = repo, tables, dict(repo.unsupported), pool

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- EmbeddingStore ------------------------------------------------------------------------------------

    async def current_versions(self, tables: Sequence[str]) -> dict[str, str]:
        """The version of each Feast view named (no I/O: versions are fixed at start)."""
        return {table: self._table(table).version for table in tables}

    async def info(self, table: str, version: str | None = None) -> TableInfo:
        """`count` is 0: Feast keeps no row count per view."""
        stored = self._table(table, version)
        return TableInfo(name=table, version=stored.version, dim=stored.view.dim, dtype=stored.view.dtype, count=0)

    def _within(self, timeout_s: float | None, *, table: str) -> contextlib.AbstractAsyncContextManager[None]:
        from kvstore._redis_wire import deadline

        return deadline(self._timeout_s if timeout_s is None else timeout_s, store=self.name, table=table)

    async def lookup(
        self,
        table: str,
        ids: npt.NDArray[np.int64],
        *,
        version: str,
        timeout_s: float | None = None,
    ) -> Lookup:
        """Rows of the Feast view `table` for `ids` in their order: one pipelined round trip."""
        stored = self._table(table, version)
        query = as_ids(ids)
        layout = stored.layout
        if len(query) == 0:
            return Lookup(np.zeros((0, stored.view.dim), layout.dtype), np.zeros(0, np.bool_), version)
        pool = self._started()
        payload = layout.pack(query)
        async with self._within(timeout_s, table=table):
            replies = await self._call(pool, payload, len(query))
            now_s = self._clock() if self._enforce_ttl else None
            vectors, found = layout.decode(replies, query, now_s=now_s)
        return Lookup(vectors=vectors, found=found, version=version)

    # -- internals ------------------------------------------------------------------------------------------

    def _table(self, table: str, version: str | None = None) -> _Table:
        self._started()
        stored = self._tables.get(table)
        if stored is None:
            why = self._unsupported.get(table)
            if why is not None:
                raise TableNotFound(f"Feast view cannot be served: {why}", store=self.name, table=table)
            raise TableNotFound(
                f"no Feast feature view {table!r}; views: {sorted(self._tables)}", store=self.name, table=table
            )
        if version is not None and version != stored.version:
            raise TableNotFound(
                f"no version {version!r}: Feast keeps one live definition, {stored.version!r} "
                "(restart the store to read a new definition)",
                store=self.name,
                table=table,
            )
        return stored

    def _started(self) -> NodePool:
        if self._pool is None:
            raise StoreUnavailable("store is not started", store=self.name)
        return self._pool

    async def _call(self, pool: NodePool, payload: bytes, n: int) -> list[Any]:
        from kvstore._redis_wire import Unreachable

        try:
            return await pool.call(payload, n)
        except Unreachable as error:
            raise StoreUnavailable(str(error), store=self.name) from error
