"""GetFeed throughput of one gateway process against `--workers N`, driven by h2load, in one run.

Usage: python benchmarks/workers_throughput.py [--world var/world] [--workers 1 2] [--connections 4 16]
                                              [--requests 2000] [--generator-cpus 1]

The load generator is h2load (Debian's nghttp2-client, installed by `make setup`): a compiled HTTP/2
client, so its cost per call is a small fraction of the gateway's. It posts one pre-encoded gRPC frame
(the 5-byte gRPC prefix + a serialized GetFeedRequest) to /quasar.v1.FeedService/GetFeed, one call at a
time per connection (`-m 1`); each connection is a TCP connection the kernel hands to one worker
(SO_REUSEPORT), so N connections spread over the workers. h2load sees HTTP status only (a gRPC error
travels in trailers with status 200), so success is read from the gateway's own metrics: every call must
be counted as `grpc_code="OK"` there, or the run fails.

`--generator-cpus` pins h2load with taskset to those CPUs (default: the last one). On a machine with no
core to spare (this one has 2) the generator shares a core with a worker: the ratio then understates what
N workers give, and the output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from _gateway_process import start_gateway

from quasar.demo.build import build_world
from quasar.v1 import feed_pb2

METHOD = "/quasar.v1.FeedService/GetFeed"


def grpc_frame(member_id: int, count: int) -> bytes:
    body = feed_pb2.GetFeedRequest(member_id=member_id, count=count).SerializeToString()
    return struct.pack(">BI", 0, len(body)) + body  # uncompressed, then the message length


class Gateway:
    """`python -m gateway --workers N` on free ports; its gRPC and metrics ports read from its output."""

    def __init__(self, world: Path, workers: int) -> None:
        self._running = start_gateway(["--world", str(world), "--workers", str(workers)])
        if self._running.metrics_port is None:
            raise SystemExit("the gateway did not log its metrics port")
        self.port, self.metrics_port = self._running.port, self._running.metrics_port

    def handled(self) -> dict[str, float]:
        """GetFeed calls handled so far, by gRPC code (summed over workers)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        codes: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("grpc_server_handled_total{") and 'grpc_method="GetFeed"' in line:
                code = re.search(r'grpc_code="(\w+)"', line)
                if code:
                    codes[code.group(1)] = codes.get(code.group(1), 0.0) + float(line.rsplit(" ", 1)[1])
        return codes

    def stop(self) -> None:
        self._running.stop()


def h2load(port: int, frame: Path, *, connections: int, requests: int, cpus: str) -> tuple[float, np.ndarray]:
    """(requests/s, latencies in ms) of one h2load run."""
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        command = [
            "taskset",
            "-c",
            cpus,
            "h2load",
            f"http://127.0.0.1:{port}{METHOD}",
            "-n",
            str(requests),
            "-c",
            str(connections),
            "-m",
            "1",
            "-d",
            str(frame),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "--log-file",
            log.name,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        found = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", result.stdout)
        failed = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", result.stdout)
        if found is None or failed is None or int(failed.group(1)) != requests:
            raise SystemExit(f"h2load did not complete every request:\n{result.stdout}")
        # --log-file: one line per request, tab separated: start time (us), HTTP status, duration (us).
        durations = np.loadtxt(log.name, usecols=2, ndmin=1) / 1e3
    return float(found.group(1)), durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("var/world"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--connections", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--member", type=int, default=42, help="the member every request asks for")
    parser.add_argument("--generator-cpus", default=str(max(os.sched_getaffinity(0))))
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is missing: `make setup` installs Debian's nghttp2-client")

    build_world(args.world, progress=True)
    cores = len(os.sched_getaffinity(0))
    print(f"\n{cores} CPUs; h2load pinned to CPU {args.generator_cpus}", end="")
    print(" (shared with the gateway: no core to spare)" if cores <= max(args.workers) else "")
    with tempfile.TemporaryDirectory() as scratch:
        frame = Path(scratch) / "request.bin"
        frame.write_bytes(grpc_frame(args.member, 50))
        results: dict[tuple[int, int], float] = {}
        for workers in args.workers:
            gateway = Gateway(args.world, workers)
            try:
                h2load(gateway.port, frame, connections=4, requests=200, cpus=args.generator_cpus)  # warm-up
                for connections in args.connections:
                    before = gateway.handled()
                    started = time.perf_counter()
                    rps, latencies = h2load(
                        gateway.port, frame, connections=connections, requests=args.requests, cpus=args.generator_cpus
                    )
                    after = gateway.handled()
                    ok = after.get("OK", 0.0) - before.get("OK", 0.0)
                    if ok != args.requests:
                        others = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
                        raise SystemExit(f"only {ok:.0f} of {args.requests} calls were OK: {others}")
                    results[(workers, connections)] = rps
                    print(
                        f"workers={workers} connections={connections:<3} {rps:8.1f} req/s  "
                        f"p50={np.percentile(latencies, 50):6.2f} ms  p99={np.percentile(latencies, 99):6.2f} ms  "
                        f"({time.perf_counter() - started:.1f} s, every call OK)"
                    )
            finally:
                gateway.stop()
    base = min(args.workers)
    print()
    for (workers, connections), rps in sorted(results.items()):
        if workers != base:
            ratio = rps / results[(base, connections)]
            print(f"throughput {workers} workers / {base} at {connections} connections: {ratio:.2f}x")
    print(json.dumps({f"{w}w_{c}c": round(r, 1) for (w, c), r in results.items()}))


if __name__ == "__main__":
    main()
