"""A burst of concurrent GetFeed calls on one channel against the demo gateway process (issue 13).

Usage: python benchmarks/overload_burst.py [--world var/world] [--burst 3000] [--deadline-s 10]
       [--unloaded 300] [--gateway-cpus 0] [--client-cpus 1] [--env QUASAR_OVERLOAD_TARGET_LATENCY_S=0.05 ...]

The gateway runs as its own process with the demo settings (plus any --env overrides). The run measures,
in order: an unloaded p99 (sequential calls), then one burst of --burst calls sent at once on one channel,
each with a --deadline-s deadline. It prints the burst's status counts, the median latency of rejected
calls (client side), admitted p50/p99 beside the unloaded p99, calls answered after their deadline, and
how many answers the gateway computed that no caller received (its `quasar_workflow_requests_total` ok +
degraded, scraped before and after the burst, minus the OK answers the client got).

Each call's latency runs from the moment the client starts it to the moment grpc completes it (a done
callback on grpc's own thread, which only stamps the time: completions run one after another there, so
any work in it would delay the stamps of those queued behind it). The client uses grpc's synchronous
futures rather than grpc.aio: with
3,000 asyncio tasks on one loop, a call's completion waits behind the loop's backlog of other tasks, and
that wait (hundreds of ms here) is the client's, not the gateway's. For the same reason the burst runs
with a 0.2 ms GIL switch interval: a done callback waits for the GIL the issuing loop holds; and the
client measures with its garbage collector off (`client_without_collector_pauses`).

On a machine with two CPUs or more the gateway (every thread of it) runs on `--gateway-cpus` and the client
on `--client-cpus` (defaults: CPU 0 and CPU 1), so the client's own cost of sending 3,000 calls and
reading 3,000 answers does not land on the gateway's core; `--gateway-cpus ''` leaves both unpinned. Each
admitted call's time outside the gateway's handler (its latency minus its `server_ms`: the wait before
grpc hands it over, and the answer's way back) is printed beside the handler's own.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from _gateway_process import start_gateway

from quasar.v1 import feed_pb2, feed_pb2_grpc


def answers_computed(metrics_port: int) -> float:
    """The gateway's count of answers it computed (ok + degraded outcomes, every workflow)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in body.splitlines():
        if line.startswith("quasar_workflow_requests_total{") and (
            'outcome="ok"' in line or 'outcome="degraded"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


@contextlib.contextmanager
def client_without_collector_pauses() -> Iterator[None]:
    """This client's garbage collector off while it measures (its objects so far frozen first).

    3,000 futures and their requests made a collection of this process's own objects likely mid-burst, and
    one that paused it for ~18 ms delayed both the calls it was sending and the completions it was stamping
    (seen as admitted calls of one instant all 15-25 ms late, before and after the handler alike). That
    pause is the client's, not the gateway's; the unloaded calls are measured the same way, so the ratio
    compares like with like. The gateway keeps its own collector (frozen after start-up, as it runs)."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def unloaded(stub: feed_pb2_grpc.FeedServiceStub, members: list[int]) -> tuple[list[float], list[float]]:
    """Sequential calls: client-side latencies and the gateway's own `server_ms`."""
    latencies, server = [], []
    for member in members:
        started = time.perf_counter()
        response = stub.GetFeed(feed_pb2.GetFeedRequest(member_id=member), timeout=5)
        latencies.append((time.perf_counter() - started) * 1e3)
        server.append(response.server_ms)
    return latencies, server


@dataclass
class Burst:
    codes: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    server_ms: list[float] = field(default_factory=list)
    outside_ms: list[float] = field(default_factory=list)  # an admitted call's latency minus its server_ms
    late: int = 0
    narrowed: int = 0
    issued_ms: float = 0.0  # when the client had sent its last call
    refused_by: Counter[str] = field(default_factory=Counter)  # core's pending bound, or admission's limit


def refused_by(details: str) -> str:
    """Who refused a RESOURCE_EXHAUSTED call, from its message."""
    if details.startswith("Too many pending requests"):
        return "core's pending bound"
    if details.startswith("Concurrent RPC limit exceeded"):
        return "grpc's active-call bound"
    return "admission"


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` onto `cpus` (a process's affinity is per thread on Linux)."""
    for thread in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(thread), cpus)


def cpu_set(text: str) -> set[int]:
    return {int(cpu) for cpu in text.split(",") if cpu.strip()}


def burst(stub: feed_pb2_grpc.FeedServiceStub, members: list[int], deadline_s: float) -> Burst:
    # A done callback only stamps the time and keeps the future: completions run one after another on
    # grpc's thread, so each callback's own work (reading the status, classifying it) would delay the
    # timestamps of the completions queued behind it, thousands of refusals among them. Read them after.
    done: list[tuple[float, float, Any]] = []
    finished = threading.Event()
    total = len(members)

    def on_done(started: float) -> Any:
        def record(future: Any) -> None:
            done.append((started, time.perf_counter(), future))  # list.append is atomic: no lock
            if len(done) == total:
                finished.set()

        return record

    # The done callbacks need the GIL, which the loop below holds while it issues calls: at the default
    # 5 ms switch interval a completion's timestamp could wait that long for it, a delay of this client's.
    switch_interval_s = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    t0 = time.perf_counter()
    for member in members:
        started = time.perf_counter()
        future = stub.GetFeed.future(feed_pb2.GetFeedRequest(member_id=member), timeout=deadline_s)
        future.add_done_callback(on_done(started))
    issued_ms = (time.perf_counter() - t0) * 1e3
    try:
        if not finished.wait(deadline_s + 30):
            raise SystemExit(f"{total - len(done)} calls never completed")
    finally:
        sys.setswitchinterval(switch_interval_s)
    return classify(done, deadline_s, issued_ms)


def classify(done: list[tuple[float, float, Any]], deadline_s: float, issued_ms: float) -> Burst:
    """The burst's figures from each call's (start, completion, future)."""
    result = Burst(issued_ms=issued_ms)
    for started, completed, future in done:
        elapsed_ms = (completed - started) * 1e3
        code = future.code()
        name = code.name if code is not None else "UNKNOWN"
        if code is grpc.StatusCode.OK:
            response = future.result()
            result.server_ms.append(response.server_ms)
            result.outside_ms.append(elapsed_ms - response.server_ms)
            result.narrowed += any(r.startswith("overload:") for r in response.degraded_reasons)
        elif code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            result.refused_by[refused_by(future.details() or "")] += 1
        result.late += elapsed_ms > deadline_s * 1e3
        result.codes[name] += 1
        result.latencies.setdefault(name, []).append(elapsed_ms)
    return result


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("var/world"))
    parser.add_argument("--burst", type=int, default=3000)
    parser.add_argument("--deadline-s", type=float, default=10.0)
    parser.add_argument("--unloaded", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gateway-cpus", default="0", help="CPUs for the gateway, comma-separated; '' unpinned")
    parser.add_argument("--client-cpus", default="1", help="CPUs for this client, comma-separated")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the gateway process")
    args = parser.parse_args()
    pinned = bool(args.gateway_cpus) and len(os.sched_getaffinity(0)) >= 2
    env = dict(item.split("=", 1) for item in args.env)
    rng = np.random.default_rng(args.seed)
    members = rng.integers(1, 1000, size=args.burst + args.unloaded).tolist()

    gateway = start_gateway(["--world", str(args.world), "--workers", "1"], env=env)
    process, target, metrics_port = gateway.process, gateway.target, gateway.metrics_port
    assert metrics_port is not None
    if pinned:  # after start-up: its threads exist by now, and the ones grpc starts later inherit the mask
        pin(process.pid, cpu_set(args.gateway_cpus))
        os.sched_setaffinity(0, cpu_set(args.client_cpus))
    try:
        with grpc.insecure_channel(target) as channel:
            stub = feed_pb2_grpc.FeedServiceStub(channel)
            unloaded(stub, members[:50])  # warm-up
            with client_without_collector_pauses():
                base, base_server = unloaded(stub, members[: args.unloaded])
            before = answers_computed(metrics_port)
            with client_without_collector_pauses():
                started = time.perf_counter()
                result = burst(stub, members[args.unloaded :], args.deadline_s)
                wall_s = time.perf_counter() - started
            after = answers_computed(metrics_port)
    finally:
        process.terminate()
        process.wait(timeout=30)

    computed = after - before
    codes, latencies = result.codes, result.latencies
    ok = latencies.get("OK", [])
    rejected = latencies.get("RESOURCE_EXHAUSTED", [])
    other = {code: n for code, n in codes.items() if code not in ("OK", "RESOURCE_EXHAUSTED")}
    print(f"gateway {target}; env {env or 'demo defaults'}")
    where = f"gateway on CPUs {args.gateway_cpus}, client on CPUs {args.client_cpus}" if pinned else "unpinned"
    print(f"cpus: {where} (of {os.cpu_count()})")
    print(
        f"unloaded: n={len(base)} p50={pct(base, 50):.2f} ms p99={pct(base, 99):.2f} ms "
        f"(server_ms p99={pct(base_server, 99):.2f} ms)"
    )
    print(f"burst: {args.burst} calls on one channel, deadline {args.deadline_s:g} s, done in {wall_s:.2f} s")
    print(f"  the client had started every call after {result.issued_ms:.1f} ms")
    print(f"  OK={codes['OK']} RESOURCE_EXHAUSTED={codes['RESOURCE_EXHAUSTED']} other={other or 0}")
    refused_by = ", ".join(f"{n} by {who}" for who, n in sorted(result.refused_by.items()))
    print(f"  rejected median={pct(rejected, 50):.2f} ms p99={pct(rejected, 99):.2f} ms ({refused_by})")
    print(
        f"  admitted p50={pct(ok, 50):.2f} ms p99={pct(ok, 99):.2f} ms "
        f"({pct(ok, 99) / pct(base, 99):.2f}x the unloaded p99); narrowed second pass: {result.narrowed}"
    )
    server = result.server_ms
    print(
        f"  admitted server_ms p50={pct(server, 50):.2f} ms p99={pct(server, 99):.2f} ms "
        f"({pct(server, 99) / pct(base_server, 99):.2f}x the unloaded server_ms p99)"
    )
    outside = result.outside_ms
    print(
        "  admitted, outside the handler (waiting to be taken, the answer's way back): "
        f"p50={pct(outside, 50):.2f} ms p99={pct(outside, 99):.2f} ms"
    )
    for code, values in sorted(latencies.items()):
        if code not in ("OK", "RESOURCE_EXHAUSTED"):
            print(f"  {code}: median={pct(values, 50):.1f} ms max={max(values):.1f} ms")
    print(f"  answered after the deadline: {result.late}")
    print(f"  answers computed by the gateway: {computed:.0f}; for callers that got none: {computed - len(ok):.0f}")


if __name__ == "__main__":
    main()
