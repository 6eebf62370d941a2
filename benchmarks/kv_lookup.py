"""One bulk embedding lookup from Redis: `RedisStore` against a bare redis.asyncio MGET, one GET per key,
and a raw-socket floor, in one run against a redis-server this script starts (and stops) itself.

Usage: python benchmarks/kv_lookup.py [--ids 1500] [--dim 64] [--dtype float32] [--rounds 400] [--uvloop]

Every method reads the same keys of the same table version (values: `kvstore.codec`, header + floats):

- store      `RedisStore.lookup`: ids in, a decoded float32 [n, dim] matrix and found mask out (key
             packing, MGET, parse, header check and decode all included).
- bare mget  `redis.asyncio.Redis.mget(keys)` with the keys already built, values left as bytes.
- get/key    one awaited `redis.asyncio` GET per key, as a per-key client would do (fewer rounds).
- raw floor  the MGET packed once in advance, written to an asyncio stream, the reply parsed by hiredis.

Rounds interleave the methods (each round runs each once, the order rotating) so drift hits all alike.
With several id sets (`--queries`, default 61) each call reads keys none of the others just pulled into the
server's CPU caches; `--queries 1` reads the same keys every time (hot).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import hiredis
import numpy as np
import redis.asyncio as aioredis

from kvstore._redis_layout import Layout
from kvstore.codec import unpack_rows
from kvstore.redis import RedisStore

GOALS = {"store / bare mget": 0.6, "store / raw floor": 2.0}
PER_KEY_GOAL = 20.0  # get/key at least this many times slower than the store
BUCKETS = 16


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*args, "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:  # readiness: poll for PONG, bounded
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16) == b"+PONG\r\n":
                    return process, port
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.02)


class RawFloor:
    """A pre-packed MGET on one asyncio stream, the reply parsed by hiredis: no client library at all."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)

    async def mget(self, packed: bytes) -> Any:
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(packed)
        parser = hiredis.Reader()
        while (reply := parser.gets()) is False:
            parser.feed(await self._reader.read(1 << 20))
        return reply

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()


def summary(samples_s: list[float]) -> tuple[float, float]:
    values = np.asarray(samples_s) * 1e3
    return float(np.median(values)), float(np.percentile(values, 99))


async def run(args: argparse.Namespace, port: int) -> int:
    rng = np.random.default_rng(0)
    rows = max(args.rows, args.ids)
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=5.0, admin_timeout_s=120.0, buckets=BUCKETS)
    await store.start()
    table_ids = np.arange(1, rows + 1, dtype=np.int64)
    version = await store.write_version(
        "item", table_ids, rng.normal(size=(rows, args.dim)).astype(np.float32), dtype=args.dtype, version="bench"
    )
    await store.set_current("item", version)
    layout = Layout(store.prefix, "item", version, BUCKETS)
    queries = [rng.choice(table_ids, size=args.ids, replace=False) for _ in range(args.queries)]
    keys = [layout.keys(q) for q in queries]
    packed = [layout.pack(b"MGET", q) for q in queries]  # the bytes hiredis.pack_command makes (a unit test)
    client = aioredis.Redis(port=port)
    floor = RawFloor(port)
    await floor.start()

    # Sanity: every method reads the same values.
    first = await store.lookup("item", queries[0], version=version)
    assert first.found.all()
    bare_values = await client.mget(keys[0])
    raw_values = await floor.mget(packed[0])
    assert bare_values == raw_values
    np.testing.assert_array_equal(first.vectors, unpack_rows(raw_values, args.dim, version)[0])

    timings: dict[str, list[float]] = {"store": [], "bare mget": [], "raw floor": [], "get/key": []}

    async def timed(name: str, call: Callable[[int], Awaitable[Any]], k: int) -> None:
        started = time.perf_counter()
        await call(k)
        timings[name].append(time.perf_counter() - started)

    async def per_key(k: int) -> None:
        for key in keys[k]:
            await client.get(key)

    methods: dict[str, Callable[[int], Awaitable[Any]]] = {
        "store": lambda k: store.lookup("item", queries[k], version=version),
        "bare mget": lambda k: client.mget(keys[k]),
        "raw floor": lambda k: floor.mget(packed[k]),
    }
    for warm in range(30):
        for method in methods.values():
            await method(warm % len(queries))
    # Consecutive calls read different id sets (unless --queries 1), so no method reads keys another just
    # pulled into the server's CPU caches; the order rotates every round, as the first of a round runs colder.
    query = 0
    for round_ in range(args.rounds):
        names = list(methods)
        names = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in names:
            await timed(name, methods[name], query % args.queries)
            query += 1
        if round_ < args.per_key_rounds:
            await timed("get/key", per_key, query % args.queries)
            query += 1

    loop = "uvloop" if args.uvloop else "asyncio"
    value_bytes = len(raw_values[0])
    print(
        f"lookup of {args.ids:,} ids, dim {args.dim}, {args.dtype} ({value_bytes} B per value), one redis-server "
        f"{args.server_version}, {loop}, {args.rounds} rounds over {args.queries} id sets of {rows:,} rows"
    )
    medians = {}
    for name, samples in timings.items():
        median, p99 = summary(samples)
        medians[name] = median
        print(f"  {name:<10} median {median:7.3f} ms   p99 {p99:7.3f} ms   (n={len(samples)})")
    ratios = {
        "store / bare mget": medians["store"] / medians["bare mget"],
        "store / raw floor": medians["store"] / medians["raw floor"],
    }
    failed = 0
    for name, ratio in ratios.items():
        ok = ratio <= GOALS[name]
        failed += not ok
        print(f"  {name:<18} {ratio:5.2f}x   goal <= {GOALS[name]}x   {'ok' if ok else 'MISSED'}")
    speedup = medians["get/key"] / medians["store"]
    ok = speedup >= PER_KEY_GOAL
    failed += not ok
    print(f"  {'get/key / store':<18} {speedup:5.1f}x   goal >= {PER_KEY_GOAL}x   {'ok' if ok else 'MISSED'}")

    await floor.close()
    await client.aclose()
    await store.close()
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=1500)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the table")
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument(
        "--queries",
        type=int,
        default=61,
        help="distinct id sets, cycled (61: each call reads keys the server has not just touched; 1: the same "
        "keys every call, hot in the server's CPU caches)",
    )
    parser.add_argument("--per-key-rounds", type=int, default=15, help="rounds that also time one GET per key")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (the gateway's loop)")
    args = parser.parse_args()
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True).stdout
    args.server_version = version.split()[2]
    with tempfile.TemporaryDirectory() as directory:
        process, port = start_redis(Path(directory))
        try:
            if args.uvloop:
                import uvloop

                failed = uvloop.run(run(args, port))
            else:
                failed = asyncio.run(run(args, port))
        finally:
            process.terminate()
            process.wait(timeout=10)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
