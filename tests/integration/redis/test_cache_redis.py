"""CachedStore in front of Redis: hits skip Redis, metrics count both, a switch invalidates."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry

from kvstore.cache import CachedStore
from kvstore.redis import RedisStore
from tests.integration.redis.servers import RedisServer

IDS = np.arange(1, 101, dtype=np.int64)


def sample(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(name, {"table": "member"}) or 0.0


async def test_hits_skip_redis_and_a_switch_drops_the_old_version(redis_server: RedisServer, prefix: str) -> None:
    writer = RedisStore(redis_server.url, prefix=prefix, timeout_s=5.0)
    await writer.start()
    registry = CollectorRegistry()
    cached = CachedStore(RedisStore(redis_server.url, prefix=prefix), tables=["member"], registry=registry)
    await cached.start()
    try:
        await writer.write_version("member", IDS, np.tile(IDS[:, None], 4).astype(np.float32), version="v1")
        await writer.set_current("member", "v1")
        versions = await cached.current_versions(["member"])
        query = np.array([5, 500, 7], dtype=np.int64)
        first = await cached.lookup("member", query, version=versions["member"])
        mgets = redis_server.calls("mget")
        second = await cached.lookup("member", query, version=versions["member"])
        assert redis_server.calls("mget") == mgets  # served from the cache, the missing id 500 included
        assert second.found.tolist() == first.found.tolist() == [True, False, True]
        np.testing.assert_array_equal(second.vectors, first.vectors)
        assert (
            sample(registry, "quasar_kvstore_cache_hits_total"),
            sample(registry, "quasar_kvstore_cache_misses_total"),
        ) == (3, 3)

        await writer.write_version("member", IDS, -np.tile(IDS[:, None], 4).astype(np.float32), version="v2")
        await writer.set_current("member", "v2")
        assert await cached.current_versions(["member"]) == {"member": "v2"}
        assert cached.size("member") == 0
        switched = await cached.lookup("member", query, version="v2")
        assert redis_server.calls("mget") == mgets + 1
        np.testing.assert_array_equal(switched.vectors[[0, 2]], [[-5] * 4, [-7] * 4])
    finally:
        await cached.close()
        await writer.close()
