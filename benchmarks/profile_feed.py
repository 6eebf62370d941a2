"""Profile the in-process GetFeed path (FeedApp.get_feed, no gRPC) on the demo world.

Usage:
  python benchmarks/profile_feed.py [--world var/world] [--requests 400]          # p50 only
  py-spy record -o feed.svg -- python benchmarks/profile_feed.py --requests 2000 # flame graph (make profile)
  py-spy record -f raw -o feed.txt -- python benchmarks/profile_feed.py --requests 3000  # folded stacks

The same requests as `make bench` (random members, count 50, >= 500 candidates in the second pass).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import numpy as np

from gateway.app import FeedApp
from gateway.settings import GatewaySettings
from quasar.demo.build import build_world
from remix.request import FeedRequest


async def run(world: Path, members: list[int], count: int) -> list[float]:
    app = FeedApp(GatewaySettings(world_dir=world, metrics_port=None))
    await app.start()
    try:
        for member in members[:50]:  # warm-up: caches, JIT-like first calls of the engines
            await app.get_feed(FeedRequest(request_id="w", member_id=member, count=count), timeout_s=None)
        latencies = []
        for member in members:
            started = time.perf_counter()
            await app.get_feed(FeedRequest(request_id="p", member_id=member, count=count), timeout_s=None)
            latencies.append((time.perf_counter() - started) * 1e3)
        return latencies
    finally:
        await app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("var/world"))
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    manifest = build_world(args.world, progress=False)
    rng = np.random.default_rng(args.seed)
    members = rng.integers(1, manifest.members + 1, size=args.requests).tolist()
    latencies = asyncio.run(run(args.world, members, args.count))
    values = np.asarray(latencies)
    print(
        f"in-process get_feed: n={len(values)} p50={np.percentile(values, 50):.2f} ms "
        f"p90={np.percentile(values, 90):.2f} ms p99={np.percentile(values, 99):.2f} ms"
    )


if __name__ == "__main__":
    main()
