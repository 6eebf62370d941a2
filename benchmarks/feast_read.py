"""Reading Feast's Redis online store: Quasar's `FeastRedisStore` beside Feast's own `get_online_features`,
in one run, on the same rows of a repository this script builds, materializes and serves from a
redis-server it starts (and stops) itself.

Usage: python benchmarks/feast_read.py [--ids 1000] [--rounds 200] [--uvloop] [--freeze-gc]

The repository is `tests/integration/feast/repo.py`'s: three servable views, two entities (driver_stats
11 columns and driver_flags 5 on `driver`, member_profile 7 on `member`). One request reads every feature
of the three views for `--ids` entity rows (each row a driver id and a member id, all materialized):

- quasar        `current_versions` then the three `lookup`s concurrently (asyncio.gather): ids in, one
                numeric matrix and found mask per view out (packing, round trips, decoding included).
- feast         `FeatureStore.get_online_features(features, entity_rows)`: Feast's SDK, one pipeline of
                HMGETs for the three views, its `OnlineResponse` out (`to_dict()` not included).
- feast async   `await FeatureStore.get_online_features_async(...)`, the same on redis.asyncio.

Rounds interleave the methods (each round runs each once, the order rotating) so drift hits all alike.
The first round checks that Quasar's rows equal Feast's. This process holds Feast, pandas and pyarrow
(millions of objects): each full garbage collection walks them, which lands in whichever call triggered
it (tens to hundreds of ms at p99). `--freeze-gc` moves the objects alive after setup out of the
collector's view (`gc.freeze()`), as a serving process would after startup.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvstore.feast_registry import load_feast_repo
from kvstore.feast_store import FeastRedisStore
from tests.integration.feast.repo import SERVABLE, VIEW_ENTITY, FeastRepo, make_repo
from tests.integration.redis.servers import RedisServer


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples), q))


def check_equal(repo: FeastRepo, lookups: dict[str, Any], ids: dict[str, np.ndarray]) -> None:
    """Quasar's rows equal Feast's for every view (first round only: the check is not timed)."""
    for view in SERVABLE:
        online = repo.online(view, ids[VIEW_ENTITY[view]])
        names = repo.features(view)
        rows = [
            [x for name in names for x in (online[name][i] if isinstance(online[name][i], list) else [online[name][i]])]
            for i in range(len(ids[VIEW_ENTITY[view]]))
        ]
        expected = np.array(rows, dtype=lookups[view].vectors.dtype)
        if not (lookups[view].found.all() and np.array_equal(lookups[view].vectors, expected)):
            raise SystemExit(f"{view}: Quasar's rows differ from Feast's")


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="feast-bench-") as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            started = time.perf_counter()
            repo = make_repo(Path(tmp) / "repo", server.port, drivers=args.ids, members=args.ids)
            print(f"repository applied and materialized in {time.perf_counter() - started:.1f} s")
            await measure(repo, args)
        finally:
            server.stop()


async def measure(repo: FeastRepo, args: argparse.Namespace) -> None:
    definitions = load_feast_repo(repo.path)
    store = FeastRedisStore(lambda: definitions, timeout_s=5.0)
    await store.start()
    rng = np.random.default_rng(0)
    ids = {entity: rng.permutation(repo.ids[entity])[: args.ids] for entity in ("driver", "member")}
    entity_rows = [
        {"driver_id": int(d), "member_id": int(m)} for d, m in zip(ids["driver"], ids["member"], strict=True)
    ]
    refs = [f"{view}:{name}" for view in SERVABLE for name in repo.features(view)]

    async def quasar() -> dict[str, Any]:
        versions = await store.current_versions(SERVABLE)
        lookups = await asyncio.gather(
            *(store.lookup(view, ids[VIEW_ENTITY[view]], version=versions[view]) for view in SERVABLE)
        )
        return dict(zip(SERVABLE, lookups, strict=True))

    async def feast() -> Any:
        return repo.store.get_online_features(features=refs, entity_rows=entity_rows)

    async def feast_async() -> Any:
        return await repo.store.get_online_features_async(features=refs, entity_rows=entity_rows)

    methods: dict[str, Callable[[], Awaitable[Any]]] = {
        "quasar": quasar,
        "feast": feast,
        "feast async": feast_async,
    }
    check_equal(repo, await quasar(), ids)
    if args.freeze_gc:
        gc.collect()
        gc.freeze()
    for method in methods.values():  # warm connections and caches
        for _ in range(5):
            await method()
    samples: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods)
    for round_index in range(args.rounds):
        rotation = order[round_index % len(order) :] + order[: round_index % len(order)]
        for name in rotation:
            started = time.perf_counter()
            await methods[name]()
            samples[name].append((time.perf_counter() - started) * 1000)
    await store.close()

    print(
        f"{args.ids} entity rows x {len(SERVABLE)} views ({sum(v.dim for v in definitions.views.values())} "
        f"columns), {args.rounds} rounds, loop={'uvloop' if args.uvloop else 'asyncio'}, "
        f"gc {'frozen after setup' if args.freeze_gc else 'as is'}"
    )
    print(f"{'method':<12} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, values in samples.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        print(f"{name:<12} {p50:>8.2f} {p99:>8.2f} {statistics.fmean(values):>8.2f}")
    base50, base99 = percentile(samples["quasar"], 50), percentile(samples["quasar"], 99)
    for name in ("feast", "feast async"):
        ratio50 = percentile(samples[name], 50) / base50
        ratio99 = percentile(samples[name], 99) / base99
        print(f"{name} / quasar: p50 {ratio50:.1f}x, p99 {ratio99:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=1000, help="entity rows per request (each view reads this many)")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--freeze-gc", action="store_true", help="gc.freeze() after setup")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
