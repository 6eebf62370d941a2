"""The gateway on Redis: killing Redis mid-traffic degrades answers, never fails them; recovery needs no restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from gateway.app import FeedApp
from kvstore.config import CacheConfig, RedisStoreConfig
from kvstore.errors import StoreUnavailable
from quasar.v1 import feed_pb2
from tests.integration.conftest import Gates, make_settings, start_gateway
from tests.integration.redis.servers import RedisServer
from tests.integration.redis.worlds import push_world, relaxed_feed


async def test_killing_redis_mid_traffic_degrades_answers_and_never_fails_them(
    small_world: Path, own_redis: RedisServer, prefix: str, tmp_path: Path
) -> None:
    await push_world(small_world, own_redis.url, prefix)
    store = RedisStoreConfig(url=own_redis.url, prefix=prefix, timeout_s=0.05, cache=CacheConfig(tables=("member",)))
    running = await start_gateway(
        make_settings(small_world, relaxed_feed(tmp_path / "wf", small_world), store=store), Gates()
    )
    registry = running.server.app.metrics.registry

    async def get(member: int) -> feed_pb2.GetFeedResponse:
        return await running.stub.GetFeed(feed_pb2.GetFeedRequest(member_id=member, count=20, debug=True), timeout=5.0)

    try:
        healthy = await get(42)
        assert not healthy.degraded, healthy.degraded_reasons
        assert {e.name: e.outcome for e in healthy.trace}["rank"] == "ok"
        await get(42)  # the member's rows now come from the in-process cache
        assert registry.get_sample_value("quasar_kvstore_cache_hits_total", {"table": "member"}) == 1
        assert (
            registry.get_sample_value("quasar_kvstore_lookup_seconds_count", {"store": "redis", "table": "item"}) == 2
        )

        answered = 0
        killed = asyncio.Event()

        async def traffic(member: int) -> list[feed_pb2.GetFeedResponse]:
            nonlocal answered
            out = []
            for _ in range(6):
                out.append(await get(member))  # an RpcError here fails the test: callers never see one
                answered += 1
                if answered == 6:
                    own_redis.kill()
                    killed.set()
            return out

        batches = await asyncio.gather(*(traffic(m) for m in (3, 42, 77)))
        assert killed.is_set()
        after = await get(42)
        responses = [r for batch in batches for r in batch] + [after]
        assert all(len(r.items) == 20 for r in responses)
        assert after.degraded
        # Without the store only the in-memory trending list answers, unscored, in first-pass order: every
        # feature (and so every model input) lives in the store now, the whole model's dense inputs too.
        assert {"features: dependency", "trending: dependency", "rank: dependency"} <= set(after.degraded_reasons)
        outcomes = {e.name: e.outcome for e in after.trace}
        assert (outcomes["features"], outcomes["rank"], outcomes["network"]) == (
            "fell_back",
            "fell_back",
            "failed_open",
        )
        assert {item.source for item in after.items} == {"trending"}
        assert all(not item.objective_scores for item in after.items)
        scores = np.array([item.score for item in after.items])
        assert np.all(np.diff(scores) <= 1e-6)
        assert registry.get_sample_value("quasar_degraded_total", {"workflow": "feed", "step": "rank"}) >= 1

        own_redis.start()  # back, empty: the operator pushes the tables again, the gateway needs no restart
        await push_world(small_world, own_redis.url, prefix)
        recovered = await get(42)
        assert not recovered.degraded, recovered.degraded_reasons
    finally:
        await running.channel.close()
        await running.server.drain_and_stop()


async def test_a_gateway_does_not_start_without_its_store(small_world: Path) -> None:
    app = FeedApp(make_settings(small_world, store=RedisStoreConfig(url="redis://127.0.0.1:1/0")))
    try:
        with pytest.raises(StoreUnavailable, match=r"cannot reach redis://127\.0\.0\.1:1/0"):
            await app.start()
    finally:
        await app.close()
