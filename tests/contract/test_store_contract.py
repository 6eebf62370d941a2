"""The `EmbeddingStore` contract, run against every implementation: the in-memory fake and each real store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import pytest_asyncio

from kvstore.base import EmbeddingStore
from kvstore.embedded import EmbeddedStore, set_current, write_version
from kvstore.errors import StoreUnavailable, TableNotFound
from kvstore.fake import InMemoryStore
from kvstore.redis import RedisStore
from tests.integration.redis.fixtures import redis_cluster, redis_server
from tests.integration.redis.servers import run_sync

__all__ = ["redis_cluster", "redis_server"]  # session fixtures, shared with the Redis integration tests

Publish = Callable[..., None]  # (table, ids, vectors, *, version, dtype="float32", make_current=True)


@dataclass
class Case:
    store: EmbeddingStore  # not started
    publish: Publish
    switch: Callable[[str, str], None]  # (table, version): make an existing version current


def memory_case(tmp_path: Path, request: pytest.FixtureRequest) -> Case:
    store = InMemoryStore()
    return Case(store=store, publish=store.put, switch=store.set_current)  # `put` has Publish's signature


def embedded_case(tmp_path: Path, request: pytest.FixtureRequest) -> Case:
    def publish(
        table: str,
        ids: npt.ArrayLike,
        vectors: npt.ArrayLike,
        *,
        version: str,
        dtype: str = "float32",
        make_current: bool = True,
    ) -> None:
        write_version(tmp_path, table, ids, vectors, dtype=dtype, version=version)
        if make_current:
            set_current(tmp_path, table, version)

    return Case(
        store=EmbeddedStore(tmp_path),
        publish=publish,
        switch=lambda table, version: set_current(tmp_path, table, version),
    )


def redis_case(tmp_path: Path, request: pytest.FixtureRequest, *, cluster: bool = False) -> Case:
    """A real redis-server (or 3-master cluster) from tests/integration/redis; a fresh key prefix per test.
    Versions are published through the store's own writer on a loop of their own (publish is sync)."""
    url = request.getfixturevalue("redis_cluster" if cluster else "redis_server").url
    prefix = f"c{uuid.uuid4().hex[:12]}"

    async def admin(action: Callable[[RedisStore], Awaitable[object]]) -> None:
        writer = RedisStore(url, prefix=prefix, buckets=4)
        await writer.start()
        try:
            await action(writer)
        finally:
            await writer.close()

    def publish(
        table: str,
        ids: npt.ArrayLike,
        vectors: npt.ArrayLike,
        *,
        version: str,
        dtype: str = "float32",
        make_current: bool = True,
    ) -> None:
        async def write(writer: RedisStore) -> None:
            await writer.write_version(table, np.asarray(ids), np.asarray(vectors), dtype=dtype, version=version)
            if make_current:
                await writer.set_current(table, version)

        run_sync(lambda: admin(write))

    def switch(table: str, version: str) -> None:
        run_sync(lambda: admin(lambda writer: writer.set_current(table, version)))

    return Case(store=RedisStore(url, prefix=prefix), publish=publish, switch=switch)


def redis_cluster_case(tmp_path: Path, request: pytest.FixtureRequest) -> Case:
    return redis_case(tmp_path, request, cluster=True)


IDS = np.array([7, 3, 11, 5], dtype=np.int64)
DATA = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)


@pytest_asyncio.fixture(
    params=[memory_case, embedded_case, redis_case, redis_cluster_case],
    ids=["memory", "embedded", "redis", "redis-cluster"],
)
async def case(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Case]:
    made: Case = request.param(tmp_path, request)
    made.publish("item", IDS, DATA, version="v1")
    await made.store.start()
    yield made
    await made.store.close()


def row(ids: npt.NDArray[np.int64], data: np.ndarray, key: int) -> np.ndarray:
    position = int(np.flatnonzero(ids == key)[0])
    return np.asarray(data[position])


async def test_is_an_embedding_store(case: Case) -> None:
    assert isinstance(case.store, EmbeddingStore)


async def test_lookup_follows_the_query_order(case: Case) -> None:
    query = np.array([11, 100, 7, 7, 5, -1], dtype=np.int64)
    result = await case.store.lookup("item", query, version="v1")
    assert result.version == "v1"
    assert result.vectors.dtype == np.float32
    assert result.vectors.shape == (6, 6)
    assert result.found.dtype == np.bool_
    assert result.found.tolist() == [True, False, True, True, True, False]
    for position, key in enumerate(query.tolist()):
        if result.found[position]:
            np.testing.assert_array_equal(result.vectors[position], row(IDS, DATA, key))
        else:
            np.testing.assert_array_equal(result.vectors[position], 0)


async def test_empty_query(case: Case) -> None:
    result = await case.store.lookup("item", np.array([], dtype=np.int64), version="v1")
    assert result.vectors.shape == (0, 6)
    assert result.found.shape == (0,)


async def test_float16_storage_rounds_within_tolerance(case: Case) -> None:
    case.publish("half", IDS, DATA, version="h1", dtype="float16")
    version = (await case.store.current_versions(["half"]))["half"]
    result = await case.store.lookup("half", IDS, version=version)
    assert result.vectors.dtype == np.float32
    assert result.found.all()
    np.testing.assert_array_equal(result.vectors, DATA.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(result.vectors, DATA, rtol=1e-3, atol=1e-4)
    info = await case.store.info("half")
    assert (info.name, info.version, info.dim, info.dtype, info.count) == ("half", "h1", 6, "float16", 4)


async def test_a_pinned_version_survives_a_switch(case: Case) -> None:
    pinned = await case.store.current_versions(["item"])
    assert pinned == {"item": "v1"}
    case.publish("item", IDS, DATA + 1, version="v2")

    old = await case.store.lookup("item", IDS, version=pinned["item"])
    np.testing.assert_array_equal(old.vectors, DATA)
    now = await case.store.current_versions(["item"])
    assert now == {"item": "v2"}
    new = await case.store.lookup("item", IDS, version=now["item"])
    np.testing.assert_array_equal(new.vectors, DATA + 1)

    case.switch("item", "v1")  # rollback
    assert await case.store.current_versions(["item"]) == {"item": "v1"}


async def test_a_version_not_yet_current_is_readable_by_name(case: Case) -> None:
    case.publish("item", IDS, DATA * 2, version="v3", make_current=False)
    assert await case.store.current_versions(["item"]) == {"item": "v1"}
    np.testing.assert_array_equal((await case.store.lookup("item", IDS, version="v3")).vectors, DATA * 2)


async def test_current_versions_of_several_tables(case: Case) -> None:
    case.publish("user", IDS[:2], DATA[:2, :3], version="u1")
    assert await case.store.current_versions(["item", "user"]) == {"item": "v1", "user": "u1"}
    assert await case.store.current_versions([]) == {}
    assert (await case.store.info("user", "u1")).dim == 3


async def test_unknown_table_or_version(case: Case) -> None:
    with pytest.raises(TableNotFound, match="'nope'") as raised:
        await case.store.lookup("nope", IDS, version="v1")
    assert raised.value.table == "nope"
    assert raised.value.store == case.store.name
    with pytest.raises(TableNotFound, match="'nope'"):
        await case.store.current_versions(["item", "nope"])
    with pytest.raises(TableNotFound, match="'nope'"):
        await case.store.info("nope")
    with pytest.raises(TableNotFound, match="'v404'"):
        await case.store.lookup("item", IDS, version="v404")
    with pytest.raises(TableNotFound, match="'v404'"):
        await case.store.info("item", "v404")


async def test_unavailable_after_close(case: Case) -> None:
    await case.store.close()
    with pytest.raises(StoreUnavailable):
        await case.store.current_versions(["item"])
