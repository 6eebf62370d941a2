"""RedisStore against real servers: bulk reads, cluster routing, integrity, cancellation, outages, switches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import numpy as np
import numpy.typing as npt
import pytest
from redis.crc import key_slot

from kvstore._redis_layout import Layout
from kvstore.cache import CachedStore
from kvstore.codec import pack_rows
from kvstore.errors import CorruptValue, StoreTimeout, StoreUnavailable, TableNotFound
from kvstore.redis import RedisStore
from tests.integration.redis.proxy import HoldingProxy
from tests.integration.redis.servers import RedisCluster, RedisServer

DIM = 8


def rows_of(ids: npt.NDArray[np.int64], sign: float = 1.0) -> npt.NDArray[np.float32]:
    """Row of id i: [i, i + 0.5, …] times `sign`, so a row names its id (and its version, by sign)."""
    return (sign * (ids[:, None] + np.arange(DIM) / 2)).astype(np.float32)


async def started(url: str, prefix: str, **options: object) -> RedisStore:
    store = RedisStore(url, prefix=prefix, **options)  # type: ignore[arg-type]
    await store.start()
    return store


async def publish(store: RedisStore, table: str, version: str, ids: npt.NDArray[np.int64], sign: float = 1.0) -> None:
    await store.write_version(table, ids, rows_of(ids, sign), version=version)
    await store.set_current(table, version)


@pytest.fixture
async def store(redis_server: RedisServer, prefix: str) -> AsyncIterator[RedisStore]:
    store = await started(redis_server.url, prefix, timeout_s=5.0)
    yield store
    await store.close()


async def test_a_bulk_lookup_is_one_mget_per_chunk(redis_server: RedisServer, prefix: str) -> None:
    store = await started(redis_server.url, prefix, mget_chunk=1000)
    try:
        await publish(store, "item", "v1", np.arange(5000, dtype=np.int64))
        query = np.random.default_rng(0).permutation(5000)[:2500].astype(np.int64)
        await store.lookup("item", query[:10], version="v1")  # version metadata is now cached
        before = redis_server.calls("mget")
        result = await store.lookup("item", query, version="v1")
        assert redis_server.calls("mget") - before == 3  # 2,500 ids in chunks of 1,000, never one per key
        assert result.found.all()
        np.testing.assert_array_equal(result.vectors, rows_of(query))
    finally:
        await store.close()


async def test_on_a_cluster_each_bucket_is_one_mget_and_nodes_share_the_work(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    store = await started(redis_cluster.url, prefix, buckets=16, timeout_s=5.0)
    try:
        assert store.cluster
        await publish(store, "item", "v1", np.arange(1, 3001, dtype=np.int64))
        query = np.random.default_rng(1).permutation(np.arange(1, 3001))[:1500].astype(np.int64)
        await store.lookup("item", query[:1], version="v1")
        before = [node.calls("mget") for node in redis_cluster.nodes]
        result = await store.lookup("item", np.r_[query, [99_999]].astype(np.int64), version="v1")
        calls = [node.calls("mget") - b for node, b in zip(redis_cluster.nodes, before, strict=True)]
        assert sum(calls) == 16  # one MGET per bucket (slot)
        assert all(c > 0 for c in calls), calls  # buckets live on every master
        assert result.found.tolist() == [True] * 1500 + [False]
        np.testing.assert_array_equal(result.vectors[:1500], rows_of(query))
        assert len(store.connections()) == 3
    finally:
        await store.close()


async def test_a_value_of_another_version_is_never_served(store: RedisStore, redis_server: RedisServer) -> None:
    ids = np.arange(10, dtype=np.int64)
    await publish(store, "item", "v1", ids)
    layout = Layout(store.prefix, "item", "v1", 16)
    redis_server.command("SET", layout.key(3), pack_rows(rows_of(ids[3:4]), "float32", "v2")[0])
    with pytest.raises(CorruptValue, match="version 'v2', expected 'v1'"):
        await store.lookup("item", ids, version="v1")


async def test_float16_values_and_missing_ids(store: RedisStore) -> None:
    ids = np.array([5, 1, 9], dtype=np.int64)
    await store.write_version("half", ids, rows_of(ids) / 100, dtype="float16", version="h1")
    result = await store.lookup("half", np.array([9, 2, 5], dtype=np.int64), version="h1")
    assert result.found.tolist() == [True, False, True]
    expected = (rows_of(np.array([9, 5])) / 100).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(result.vectors[[0, 2]], expected)
    np.testing.assert_array_equal(result.vectors[1], 0)
    assert (await store.info("half", "h1")).dtype == "float16"


async def test_cancelled_lookups_never_leave_a_connection_out_of_step(store: RedisStore, prefix: str) -> None:
    ids = np.arange(2000, dtype=np.int64)
    await publish(store, "item", "v1", ids)
    proxy = await HoldingProxy(store.address.port).start()
    serving = await started(proxy.url, prefix, pool_size=8, timeout_s=10.0)
    try:
        await serving.lookup("item", ids[:5], version="v1")  # warm: one idle connection, metadata cached
        proxy.hold()
        batches = [ids[k * 200 : (k + 1) * 200] for k in range(10)]
        in_flight = [asyncio.create_task(serving.lookup("item", b, version="v1")) for b in batches[:8]]
        await asyncio.wait_for(proxy.held(8), 10)  # 8 connections hold half a reply each
        queued = [asyncio.create_task(serving.lookup("item", b, version="v1")) for b in batches[8:]]
        await asyncio.sleep(0)  # let the queued two reach the pool: all 8 connections are lent out
        assert serving.connections() == {f"127.0.0.1:{proxy.port}": (0, 8)}
        for task in in_flight + queued:
            task.cancel()
        outcomes = await asyncio.gather(*in_flight, *queued, return_exceptions=True)
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
        # Every connection caught mid-reply was closed, none went back to the pool.
        assert serving.connections() == {f"127.0.0.1:{proxy.port}": (0, 0)}
        proxy.release()

        rng = np.random.default_rng(2)
        queries = [rng.choice(ids, size=300, replace=False) for _ in range(20)]
        results = await asyncio.gather(*(serving.lookup("item", q, version="v1") for q in queries))
        for query, result in zip(queries, results, strict=True):
            assert result.found.all()
            np.testing.assert_array_equal(result.vectors, rows_of(query))
    finally:
        await serving.close()
        await proxy.close()


async def test_a_lookup_past_its_timeout_raises_and_drops_its_connection(store: RedisStore, prefix: str) -> None:
    ids = np.arange(100, dtype=np.int64)
    await publish(store, "item", "v1", ids)
    proxy = await HoldingProxy(store.address.port).start()
    serving = await started(proxy.url, prefix, timeout_s=5.0)
    try:
        await serving.lookup("item", ids[:3], version="v1")
        proxy.hold()
        with pytest.raises(StoreTimeout, match="not done within 50 ms") as raised:
            await serving.lookup("item", ids[10:60], version="v1", timeout_s=0.05)
        assert (raised.value.store, raised.value.table) == ("redis", "item")
        assert serving.connections() == {f"127.0.0.1:{proxy.port}": (0, 0)}
        proxy.release()
        result = await serving.lookup("item", ids[60:], version="v1")
        np.testing.assert_array_equal(result.vectors, rows_of(ids[60:]))
    finally:
        await serving.close()
        await proxy.close()


async def test_the_pool_blocks_at_its_size(store: RedisStore, prefix: str, redis_server: RedisServer) -> None:
    ids = np.arange(500, dtype=np.int64)
    await publish(store, "item", "v1", ids)
    small = await started(redis_server.url, prefix, pool_size=2, timeout_s=5.0)
    try:
        queries = [ids[k::25] for k in range(25)]
        results = await asyncio.gather(*(small.lookup("item", q, version="v1") for q in queries))
        for query, result in zip(queries, results, strict=True):
            np.testing.assert_array_equal(result.vectors, rows_of(query))
        ((idle, busy),) = small.connections().values()
        assert idle <= 2
        assert busy == 0
    finally:
        await small.close()


async def test_a_killed_server_fails_lookups_fast_and_a_restarted_one_is_used_again(
    own_redis: RedisServer, prefix: str
) -> None:
    store = await started(own_redis.url, prefix, timeout_s=2.0)
    try:
        ids = np.arange(50, dtype=np.int64)
        await publish(store, "item", "v1", ids)
        assert (await store.lookup("item", ids, version="v1")).found.all()

        own_redis.kill()
        started_s = time.monotonic()
        with pytest.raises(StoreUnavailable, match="item"):
            await store.lookup("item", ids, version="v1")
        with pytest.raises(StoreUnavailable):
            await store.current_versions(["item"])
        assert time.monotonic() - started_s < 1.0  # refused connections, not the 2 s timeout

        own_redis.start()  # same port, empty (no persistence): the same store object reaches it again
        with pytest.raises(TableNotFound):
            await store.current_versions(["item"])
        await publish(store, "item", "v1", ids, sign=-1.0)
        np.testing.assert_array_equal((await store.lookup("item", ids, version="v1")).vectors, rows_of(ids, -1.0))
    finally:
        await store.close()


async def test_a_restart_between_two_lookups_costs_no_error(own_redis: RedisServer, prefix: str) -> None:
    store = await started(own_redis.url, prefix, timeout_s=2.0)
    try:
        ids = np.arange(50, dtype=np.int64)
        await publish(store, "item", "v1", ids)
        await asyncio.gather(*(store.lookup("item", ids[k::4], version="v1") for k in range(4)))
        assert store.connections()[f"127.0.0.1:{own_redis.port}"] == (4, 0)
        own_redis.kill()  # the loop does not run in between: the store has not seen its sockets close
        own_redis.start()
        await publish(store, "item", "v1", ids, sign=-1.0)  # stale connections failed once, a new one served
        np.testing.assert_array_equal((await store.lookup("item", ids, version="v1")).vectors, rows_of(ids, -1.0))
    finally:
        await store.close()


async def test_connections_the_server_dropped_are_replaced(store: RedisStore, redis_server: RedisServer) -> None:
    ids = np.arange(50, dtype=np.int64)
    await publish(store, "item", "v1", ids)
    await asyncio.gather(*(store.lookup("item", ids[k::4], version="v1") for k in range(4)))
    received = int(redis_server.info("stats")["total_connections_received"])
    redis_server.command("CLIENT", "KILL", "TYPE", "normal")  # drops every client but the caller
    result = await store.lookup("item", ids, version="v1")  # the stale connection is retried once, on a new one
    np.testing.assert_array_equal(result.vectors, rows_of(ids))
    after = int(redis_server.info("stats")["total_connections_received"])
    assert after >= received + 3  # CLIENT KILL's and this INFO's own connections, and the store's new one


class Readers:
    """Workers each running 'requests' one after another (versions once, then one lookup per table at
    them), checking every row against the version the request resolved."""

    def __init__(self, tables: Sequence[str], workers: int = 4, requests: int = 15) -> None:
        self.tables, self.workers, self.requests = tables, workers, requests
        self.done = 0
        self.seen: set[str] = set()

    @property
    def total(self) -> int:
        return self.workers * self.requests

    async def run(self, store: RedisStore | CachedStore) -> None:
        await asyncio.gather(*(self._worker(store, w) for w in range(self.workers)))

    async def _worker(self, store: RedisStore | CachedStore, worker: int) -> None:
        ids = np.arange(1, 40, dtype=np.int64)[worker::3]
        for _ in range(self.requests):
            versions = await store.current_versions(self.tables)
            results = await asyncio.gather(*(store.lookup(t, ids, version=versions[t]) for t in self.tables))
            for table, result in zip(self.tables, results, strict=True):
                assert result.version == versions[table]
                sign = 1.0 if versions[table] == "v1" else -1.0
                np.testing.assert_array_equal(result.vectors, rows_of(ids, sign))
                self.seen.add(f"{table}@{versions[table]}")
            self.done += 1


async def test_a_version_switch_under_concurrent_reads_never_mixes_versions(store: RedisStore, prefix: str) -> None:
    ids = np.arange(1, 40, dtype=np.int64)
    for table in ("member", "item"):
        await publish(store, table, "v2", ids, sign=-1.0)
        await publish(store, table, "v1", ids, sign=1.0)
    cached = CachedStore(await started(str(store.address), prefix, timeout_s=5.0), tables=["member"])
    plain, through_cache = Readers(("member", "item")), Readers(("member", "item"))

    async def switcher() -> None:
        flips = 0
        while plain.done < plain.total or through_cache.done < through_cache.total:
            flips += 1
            for table in ("member", "item"):
                await store.set_current(table, "v2" if flips % 2 else "v1")

    try:
        await asyncio.gather(plain.run(store), through_cache.run(cached), switcher())
        both = {"member@v1", "member@v2", "item@v1", "item@v2"}
        assert plain.seen == both
        assert through_cache.seen == both
    finally:
        await cached.close()


async def test_a_slot_moved_under_a_running_store_is_followed(redis_cluster: RedisCluster, prefix: str) -> None:
    store = await started(redis_cluster.url, prefix, buckets=1, timeout_s=5.0)  # the slot map is read now
    try:
        # A table whose only bucket lands in a slot holding no keys yet, so that slot may change owner.
        names = (f"moved{k}" for k in range(1000))
        table = next(name for name in names if redis_cluster.keys_in_slot(key_slot(f"{{{name}:v1:0}}".encode())) == 0)
        slot = key_slot(f"{{{table}:v1:0}}".encode())
        owner = redis_cluster.owner(slot)
        target = next(node for node in redis_cluster.nodes if node is not owner)
        redis_cluster.move_empty_slot(slot, target)
        moved_before = redis_cluster.moved_replies(owner)

        # The store still sends the slot to `owner`: its MSET and MGET get MOVED, refresh the map, follow.
        await publish(store, table, "v1", np.arange(20, dtype=np.int64))
        result = await store.lookup(table, np.arange(25, dtype=np.int64), version="v1")
        assert result.found.tolist() == [True] * 20 + [False] * 5
        np.testing.assert_array_equal(result.vectors[:20], rows_of(np.arange(20, dtype=np.int64)))
        assert target.command("CLUSTER", "COUNTKEYSINSLOT", str(slot)) == 20
        assert redis_cluster.moved_replies(owner) == moved_before + 1  # once: the map was refreshed after it
    finally:
        await store.close()
