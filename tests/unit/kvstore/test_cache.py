"""CachedStore over the in-memory store: hits, misses, TTL, LRU bound, invalidation on a version switch."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from kvstore.cache import CachedStore
from kvstore.errors import StoreUnavailable
from kvstore.fake import InMemoryStore
from remix.testing import ManualClock

IDS = np.arange(1, 11, dtype=np.int64)


def rows(sign: float = 1.0) -> np.ndarray:
    return (sign * np.stack([IDS, IDS * 10], axis=1)).astype(np.float32)


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@pytest.fixture
async def inner() -> InMemoryStore:
    store = InMemoryStore()
    store.put("member", IDS, rows(), version="v1")
    store.put("item", IDS, rows(), version="v1")
    await store.start()
    return store


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def cached(inner: InMemoryStore, registry: CollectorRegistry, clock: ManualClock) -> CachedStore:
    return CachedStore(inner, tables=["member"], max_entries=5, ttl_s=60.0, registry=registry, clock=clock)


def counts(registry: CollectorRegistry, table: str = "member") -> tuple[float, float]:
    hits = registry.get_sample_value("quasar_kvstore_cache_hits_total", {"table": table}) or 0.0
    misses = registry.get_sample_value("quasar_kvstore_cache_misses_total", {"table": table}) or 0.0
    return hits, misses


async def test_second_read_is_a_hit_and_skips_the_inner_store(
    cached: CachedStore, inner: InMemoryStore, registry: CollectorRegistry
) -> None:
    assert await cached.current_versions(["member"]) == {"member": "v1"}
    first = await cached.lookup("member", ids(3, 99), version="v1")
    assert counts(registry) == (0, 2)
    inner.lookups.clear()
    again = await cached.lookup("member", ids(99, 3), version="v1")
    assert inner.lookups == []  # both served from the cache, the miss (no row) included
    assert counts(registry) == (2, 2)
    assert first.found.tolist() == [True, False]
    assert again.found.tolist() == [False, True]
    np.testing.assert_array_equal(again.vectors, [[0, 0], [3, 30]])


async def test_only_the_ids_not_cached_go_to_the_inner_store(cached: CachedStore, inner: InMemoryStore) -> None:
    await cached.lookup("member", ids(1, 2), version="v1")
    inner.lookups.clear()
    result = await cached.lookup("member", ids(2, 4, 1, 5), version="v1")
    assert [call.ids.tolist() for call in inner.lookups] == [[4, 5]]
    np.testing.assert_array_equal(result.vectors, rows()[[1, 3, 0, 4]])


async def test_tables_not_enabled_pass_through_uncounted(
    cached: CachedStore, inner: InMemoryStore, registry: CollectorRegistry
) -> None:
    for _ in range(2):
        await cached.lookup("item", ids(1), version="v1")
    assert len(inner.lookups) == 2
    assert counts(registry, "item") == (0, 0)


async def test_a_version_switch_drops_the_old_entries(
    cached: CachedStore, inner: InMemoryStore, registry: CollectorRegistry
) -> None:
    await cached.current_versions(["member"])
    await cached.lookup("member", ids(1, 2), version="v1")
    assert cached.size("member") == 2

    inner.put("member", IDS, rows(-1.0), version="v2")  # made current
    assert await cached.current_versions(["member"]) == {"member": "v2"}
    assert (cached.cached_version("member"), cached.size("member")) == ("v2", 0)
    new = await cached.lookup("member", ids(1, 2), version="v2")
    np.testing.assert_array_equal(new.vectors, rows(-1.0)[:2])

    # A request still pinned to v1 reads v1 through to the store, and does not fill the cache with it.
    old = await cached.lookup("member", ids(1, 2, 3), version="v1")
    np.testing.assert_array_equal(old.vectors, rows()[:3])
    assert cached.size("member") == 2
    assert counts(registry) == (0, 7)


async def test_entries_expire_after_ttl(cached: CachedStore, inner: InMemoryStore, clock: ManualClock) -> None:
    await cached.lookup("member", ids(1), version="v1")
    clock.advance(59.0)
    inner.lookups.clear()
    await cached.lookup("member", ids(1), version="v1")
    assert inner.lookups == []
    clock.advance(2.0)
    await cached.lookup("member", ids(1), version="v1")
    assert len(inner.lookups) == 1


async def test_the_least_recently_used_go_first_beyond_the_bound(cached: CachedStore, inner: InMemoryStore) -> None:
    await cached.lookup("member", ids(1, 2, 3, 4, 5), version="v1")
    await cached.lookup("member", ids(1), version="v1")  # 1 is now the most recent
    await cached.lookup("member", ids(6, 7), version="v1")  # evicts 2 and 3
    assert cached.size("member") == 5
    inner.lookups.clear()
    await cached.lookup("member", ids(1, 4, 5, 6, 7, 2), version="v1")
    assert [call.ids.tolist() for call in inner.lookups] == [[2]]


async def test_rows_fetched_across_a_switch_are_not_cached(cached: CachedStore, inner: InMemoryStore) -> None:
    await cached.current_versions(["member"])
    gate = asyncio.Event()
    inner.block_until(gate)
    pending = asyncio.create_task(cached.lookup("member", ids(1), version="v1"))
    await inner.entered.wait()
    inner.block_until(None)
    inner.put("member", IDS, rows(-1.0), version="v2")
    await cached.current_versions(["member"])  # switches while the v1 read is in flight
    gate.set()
    np.testing.assert_array_equal((await pending).vectors, rows()[:1])
    assert (cached.cached_version("member"), cached.size("member")) == ("v2", 0)


async def test_errors_of_the_inner_store_propagate_and_cache_nothing(cached: CachedStore, inner: InMemoryStore) -> None:
    inner.fail_with(StoreUnavailable("down", store="memory"))
    with pytest.raises(StoreUnavailable):
        await cached.lookup("member", ids(1), version="v1")
    assert cached.size("member") == 0


async def test_close_empties_the_cache(cached: CachedStore) -> None:
    await cached.lookup("member", ids(1), version="v1")
    await cached.close()
    assert (cached.cached_version("member"), cached.size("member")) == (None, 0)


def test_rejects_bad_bounds(inner: InMemoryStore) -> None:
    with pytest.raises(ValueError, match="max_entries"):
        CachedStore(inner, tables=["member"], max_entries=0)
    with pytest.raises(ValueError, match="ttl_s"):
        CachedStore(inner, tables=["member"], ttl_s=0)
