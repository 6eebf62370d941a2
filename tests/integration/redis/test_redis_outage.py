"""Redis down for 20 s under load, in two-stage mode: no caller error, answers degraded while it is down,
full answers again within 5 s of its return (it restarts from its snapshot, as a real one would).
Prints error rate, p50/p99 against the fault-free baseline and lost calls (`pytest -s`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from kvstore.config import CacheConfig, RedisStoreConfig
from quasar.v1 import feed_pb2
from tests.integration.conftest import Gates, make_settings, start_gateway
from tests.integration.faults import Sample, call, figures
from tests.integration.redis.servers import RedisServer
from tests.integration.redis.worlds import push_world, relaxed_feed

OUTAGE_S = 20.0
RECONNECT_WITHIN_S = 5.0
CLIENTS = 4
TIMEOUT_S = 2.0


async def test_redis_down_for_20_s_fails_no_caller_and_full_answers_return_within_5_s(
    small_world: Path, own_redis: RedisServer, prefix: str, tmp_path: Path
) -> None:
    await push_world(small_world, own_redis.url, prefix)
    own_redis.command("SAVE")  # its snapshot: what it restarts from
    store = RedisStoreConfig(url=own_redis.url, prefix=prefix, timeout_s=0.05, cache=CacheConfig(tables=("member",)))
    running = await start_gateway(
        make_settings(small_world, relaxed_feed(tmp_path / "wf", small_world), store=store), Gates()
    )
    rows: dict[str, list[Sample]] = {"baseline": [], "redis down (20 s)": [], "redis back": []}
    sequence = iter(range(1_000_000))

    async def client(phase: str, until: asyncio.Event | None, calls: int | None) -> None:
        made = 0
        while (until is None or not until.is_set()) and (calls is None or made < calls):
            i = next(sequence)
            request = feed_pb2.GetFeedRequest(request_id=f"{phase}-{i}", member_id=1 + i % 700, count=20)
            rows[phase].append(await call(running.stub.GetFeed, phase, request, TIMEOUT_S))
            made += 1

    try:
        await asyncio.gather(*(client("baseline", None, 40) for _ in range(CLIENTS)))
        assert all(s.ok and not s.degraded_reasons for s in rows["baseline"])

        over = asyncio.Event()
        load = [asyncio.create_task(client("redis down (20 s)", over, None)) for _ in range(CLIENTS)]
        own_redis.kill()
        await asyncio.sleep(OUTAGE_S)  # the fault's duration, not a wait for something to happen
        over.set()
        await asyncio.gather(*load)

        own_redis.start()
        back_s = time.monotonic()
        recovered = asyncio.Event()

        async def until_recovered() -> None:
            while not recovered.is_set():
                i = next(sequence)
                request = feed_pb2.GetFeedRequest(request_id=f"back-{i}", member_id=1 + i % 700, count=20)
                sample = await call(running.stub.GetFeed, "redis back", request, TIMEOUT_S)
                rows["redis back"].append(sample)
                if sample.ok and not sample.degraded_reasons:
                    recovered.set()
                elif time.monotonic() - back_s > 3 * RECONNECT_WITHIN_S:
                    return

        await asyncio.gather(*(until_recovered() for _ in range(CLIENTS)))
        first_full = min(
            (s.sent_s + s.latency_s for s in rows["redis back"] if s.ok and not s.degraded_reasons), default=None
        )
    finally:
        await running.channel.close()
        await running.server.drain_and_stop()

    reconnect_s = None if first_full is None else first_full - back_s
    print()
    print(figures("Redis killed for 20 s (two-stage mode)", rows, lost=lambda s: not s.ok, baseline="baseline"))
    print(f"  first full answer {reconnect_s if reconnect_s is None else round(reconnect_s, 2)} s after Redis returned")
    down = rows["redis down (20 s)"]
    assert len(down) > 100  # traffic ran through the outage
    assert [s for rows_ in rows.values() for s in rows_ if not s.ok] == []  # no caller error, none lost
    assert sum(bool(s.degraded_reasons) for s in down) > 0.9 * len(down)  # degraded while it was down
    assert reconnect_s is not None
    assert reconnect_s <= RECONNECT_WITHIN_S
