"""`CachedStore`: a bounded in-process LRU with TTL in front of any `EmbeddingStore`, for hot tables.

Meant for rows read by nearly every request (the member's embedding and feature row): a hit saves a round
trip to Redis. Enabled per table; other tables pass straight through.

Versions: a table's cache holds rows of one version only, the one `current_versions` last reported as
current, so the cache key is (version, id) and a cached row can never be served for another version. When
`current_versions` reports a new version, the old version's entries are dropped at once. Lookups at any
other version (a request still pinned to the previous one) pass through uncached. Before the first
`current_versions`, the first version looked up is adopted.

Both rows and misses (found False) are cached: a version never changes once written. Entries expire
`ttl_s` after they were stored (bounding how long a deleted-and-rewritten version could be served stale)
and the least recently used go first beyond `max_entries` per table.

Metrics (on the registry given, else a private one): `quasar_kvstore_cache_hits_total{table}` and
`quasar_kvstore_cache_misses_total{table}` count ids served from the cache and ids that were not (looked
up in the inner store, including pass-through lookups of a cached table).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter

from kvstore._decorator import StoreDecorator
from kvstore.base import EmbeddingStore, Lookup

_Row = npt.NDArray[Any] | None  # None: the id has no row in this version


@dataclass
class _TableCache:
    version: str | None = None
    dim: int | None = None
    dtype: np.dtype[Any] = field(default_factory=lambda: np.dtype(np.float32))
    entries: OrderedDict[int, tuple[float, _Row]] = field(default_factory=OrderedDict)  # id -> (expires, row)

    def switch_to(self, version: str) -> None:
        if version != self.version:
            self.version, self.dim = version, None
            self.entries.clear()


class CachedStore(StoreDecorator):
    """See the module docstring. `clock` (seconds, monotonic) is injectable for tests."""

    def __init__(
        self,
        inner: EmbeddingStore,
        *,
        tables: Iterable[str],
        max_entries: int = 100_000,
        ttl_s: float = 300.0,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or not ttl_s > 0:
            raise ValueError(f"max_entries must be >= 1 and ttl_s > 0, got {max_entries}, {ttl_s}")
        super().__init__(inner)
        self._caches = {table: _TableCache() for table in tables}
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._clock = clock
        registry = registry if registry is not None else CollectorRegistry()
        self._hits = Counter(
            "quasar_kvstore_cache_hits_total", "Ids served from the in-process cache.", ("table",), registry=registry
        )
        self._misses = Counter(
            "quasar_kvstore_cache_misses_total",
            "Ids of cached tables not served from the cache.",
            ("table",),
            registry=registry,
        )

    @property
    def tables(self) -> list[str]:
        return sorted(self._caches)

    def cached_version(self, table: str) -> str | None:
        """The version the table's cache holds rows of (None before any)."""
        return self._caches[table].version

    def size(self, table: str) -> int:
        return len(self._caches[table].entries)

    async def close(self) -> None:
        for cache in self._caches.values():
            cache.version, cache.dim = None, None
            cache.entries.clear()
        await super().close()

    async def current_versions(self, tables: Sequence[str]) -> dict[str, str]:
        versions = await self.inner.current_versions(tables)
        for table, version in versions.items():
            cache = self._caches.get(table)
            if cache is not None:
                cache.switch_to(version)
        return versions

    async def lookup(
        self, table: str, ids: npt.NDArray[np.int64], *, version: str, timeout_s: float | None = None
    ) -> Lookup:
        cache = self._caches.get(table)
        if cache is None:
            return await self.inner.lookup(table, ids, version=version, timeout_s=timeout_s)
        if cache.version is None:
            cache.switch_to(version)
        query = np.asarray(ids)
        if cache.version != version or len(query) == 0:
            result = await self.inner.lookup(table, ids, version=version, timeout_s=timeout_s)
            self._misses.labels(table).inc(len(query))
            return result

        now = self._clock()
        keys = query.tolist()
        rows: list[_Row] = []
        missed: list[int] = []  # positions in the query
        entries = cache.entries
        for position, key in enumerate(keys):
            entry = entries.get(key)
            if entry is not None and entry[0] > now:
                entries.move_to_end(key)
                rows.append(entry[1])
            else:
                rows.append(None)
                missed.append(position)
        hits = len(keys) - len(missed)
        if hits:
            self._hits.labels(table).inc(hits)
        if missed:
            self._misses.labels(table).inc(len(missed))
            fetched = await self.inner.lookup(table, query[missed], version=version, timeout_s=timeout_s)
            for offset, position in enumerate(missed):
                rows[position] = fetched.vectors[offset] if fetched.found[offset] else None
            # The table may have switched while we waited: then these rows belong to no cached version.
            if cache.version == version:
                cache.dim, cache.dtype = fetched.vectors.shape[1], fetched.vectors.dtype
                expires = self._clock() + self._ttl_s
                for position in missed:
                    entries[keys[position]] = (expires, rows[position])
                    entries.move_to_end(keys[position])
                while len(entries) > self._max_entries:
                    entries.popitem(last=False)
            dim, dtype = fetched.vectors.shape[1], fetched.vectors.dtype
        else:
            assert cache.dim is not None  # set with the first rows stored
            dim, dtype = cache.dim, cache.dtype
        vectors = np.zeros((len(keys), dim), dtype=dtype)
        found = np.zeros(len(keys), dtype=np.bool_)
        for position, row in enumerate(rows):
            if row is not None:
                vectors[position] = row
                found[position] = True
        return Lookup(vectors=vectors, found=found, version=version)


if TYPE_CHECKING:
    _conforms: type[EmbeddingStore] = CachedStore
