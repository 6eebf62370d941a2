"""GetFeed latency over gRPC against a gateway process, beside the in-process floor, in one run.

Usage: python benchmarks/feed_latency.py [--world var/world] [--requests 500] [--concurrency 1 4]

The gateway runs as its own process (uvloop, embedded defaults); the client sends requests for random
members. Every measured request must merge >= --min-candidates candidates into the second pass; the
in-process run (FeedApp.get_feed, no gRPC) checks that and gives the floor the gRPC figures compare to.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from pathlib import Path

import grpc
import numpy as np
from _gateway_process import start_gateway

from gateway.app import FeedApp
from gateway.settings import GatewaySettings
from quasar.demo.build import build_world
from quasar.v1 import feed_pb2, feed_pb2_grpc
from remix.request import FeedRequest
from remix.steps import MERGED


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    values = np.asarray(samples_ms)
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 99)} | {"max": float(values.max())}


def show(label: str, samples_ms: list[float], wall_s: float) -> dict[str, float]:
    stats = percentiles(samples_ms)
    print(
        f"{label:<28} n={len(samples_ms):<5} p50={stats['p50']:7.2f} ms  p90={stats['p90']:7.2f} ms  "
        f"p99={stats['p99']:7.2f} ms  max={stats['max']:7.2f} ms  {len(samples_ms) / wall_s:7.1f} req/s"
    )
    return stats


async def grpc_run(target: str, members: np.ndarray, concurrency: int, count: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue = list(members.tolist())
    async with grpc.aio.insecure_channel(target) as channel:
        stub = feed_pb2_grpc.FeedServiceStub(channel)

        async def worker() -> None:
            while queue:
                member = queue.pop()
                started = time.perf_counter()
                response = await stub.GetFeed(feed_pb2.GetFeedRequest(member_id=member, count=count), timeout=5)
                latencies.append((time.perf_counter() - started) * 1e3)
                if len(response.items) != count:
                    raise RuntimeError(f"member {member}: {len(response.items)} items, wanted {count}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


async def in_process_run(
    world: Path, members: np.ndarray, count: int, min_candidates: int
) -> tuple[list[float], float, int]:
    app = FeedApp(GatewaySettings(world_dir=world, metrics_port=None))
    await app.start()
    gc.freeze()  # as the gateway does once started (gateway/server.py): no full collection mid-run
    try:
        for member in members[:20].tolist():  # warm-up
            await app.get_feed(FeedRequest(request_id="w", member_id=member, count=count), timeout_s=None)
        latencies, smallest = [], 1 << 30
        started = time.perf_counter()
        for member in members.tolist():
            t0 = time.perf_counter()
            answer = await app.get_feed(FeedRequest(request_id="b", member_id=member, count=count), timeout_s=None)
            latencies.append((time.perf_counter() - t0) * 1e3)
            smallest = min(smallest, len(answer.context.get(MERGED)))
        wall = time.perf_counter() - started
    finally:
        await app.close()
        gc.unfreeze()
    if smallest < min_candidates:
        raise SystemExit(f"a request merged only {smallest} candidates (< {min_candidates}): not a valid run")
    return latencies, wall, smallest


async def health_overhead(world: Path, members: np.ndarray, count: int, rounds: int = 10) -> tuple[float, float]:
    """In-process p50 with health tracking on and off, both serving the world's release, interleaved in
    rounds (the host's noise falls on both alike). The two p50s in ms."""
    from gateway.release_changes import LocalReleaseChanges
    from health.monitor import HealthSettings

    (release,) = sorted((world / "releases").glob("*.yaml"))
    apps = {}
    for label, enabled in (("on", True), ("off", False)):
        app = FeedApp(GatewaySettings(world_dir=world, metrics_port=None, health=HealthSettings(enabled=enabled)))
        await app.start()
        await LocalReleaseChanges(app.releases).apply(str(release.resolve()), canary_share=0.0, dry_run=False)
        apps[label] = app
    gc.freeze()
    samples: dict[str, list[float]] = {"on": [], "off": []}
    try:
        chunks = np.array_split(members, rounds)
        for chunk in chunks:
            for label in ("on", "off") if len(samples["on"]) % 2 == 0 else ("off", "on"):
                app = apps[label]
                for member in chunk.tolist():
                    t0 = time.perf_counter()
                    await app.get_feed(FeedRequest(request_id="h", member_id=member, count=count), timeout_s=None)
                    samples[label].append((time.perf_counter() - t0) * 1e3)
                await asyncio.sleep(0)  # the monitor's background task drains between rounds, as it would
        health = apps["on"].health
        if health is not None:
            await health.flush()
    finally:
        for app in apps.values():
            await app.close()
        gc.unfreeze()
    return float(np.percentile(samples["on"], 50)), float(np.percentile(samples["off"], 50))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("var/world"))
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--min-candidates", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    manifest = build_world(args.world, progress=True)
    rng = np.random.default_rng(args.seed)
    members = rng.integers(1, manifest.members + 1, size=args.requests)

    print(f"\nin-process floor (FeedApp.get_feed, no gRPC), {args.requests} requests, count={args.count}")
    floor_ms, floor_wall, smallest = await in_process_run(args.world, members, args.count, args.min_candidates)
    floor = show("in-process", floor_ms, floor_wall)
    print(f"every request merged >= {smallest} candidates into the second pass")

    on_ms, off_ms = await health_overhead(args.world, members, args.count)
    print(
        f"\nhealth tracking (sketches of every feature and head, drift vs the release's offline sketches), "
        f"in process, interleaved:\n  on p50 {on_ms:.2f} ms, off p50 {off_ms:.2f} ms: on/off {on_ms / off_ms:.3f}x "
        f"(goal <= 1.05x)"
    )

    # One process: the figures compare with the one-process in-process floor (workers: workers_throughput.py).
    gateway = start_gateway(["--world", str(args.world), "--workers", "1"])
    target = gateway.target
    try:
        await grpc_run(target, members[:50], 1, args.count)  # warm-up
        print(f"\ngRPC GetFeed against a gateway process at {target}")
        for concurrency in args.concurrency:
            latencies, wall = await grpc_run(target, members, concurrency, args.count)
            stats = show(f"grpc concurrency={concurrency}", latencies, wall)
            print(f"{'':<28} p50 ratio to in-process floor: {stats['p50'] / floor['p50']:.2f}x")
    finally:
        gateway.stop()


if __name__ == "__main__":
    asyncio.run(main())
