"""GetFeed latency curves: percentiles against offered load (open loop) and against second-pass candidates.

Usage: python benchmarks/latency_curves.py [--out var/bench/curves] [--step-s 10] [--load-steps 8]
       [--max-load 2.0] [--saturation-rps R] [--sizes 100 250 500 1000 1500 2000] [--requests 300]

Writes <out>/load.csv, <out>/load.png, <out>/candidates.csv, <out>/candidates.png and prints both tables.
Every gateway is its own process (`python -m gateway --workers 1` by default) on the demo world, with the
feature clock pinned an hour after the world's reference time, so runs on different days read the same ages.

Load curve: a closed-loop run at concurrency 16 finds the saturation throughput (or --saturation-rps gives it),
then each step offers a fixed rate, from --min-load to --max-load times saturation, for --step-s seconds:
Poisson arrivals on a schedule fixed in advance, each call sent at its slot whether or not earlier calls have
answered (open loop, so queueing shows), each with a --deadline-s deadline. Percentiles are over answered
calls, measured from when a call was actually sent; refused or expired calls (RESOURCE_EXHAUSTED,
UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED: the gateway shedding load) are counted by status code. The
generator is Python sharing the machine's cores with the gateway, so each step also reports its schedule lag
(how late each send was against its slot) and the client's CPU use: when the lag grows or the client nears
one core, the generator, not the gateway, limits the step.

Candidates curve: one gateway serves a workflow variant per size N (`feed_n<N>`, written to <out>/workflows):
the feed workflow with merge `max_candidates: N`, and every source's limit/retrieve and merge quota scaled
by N/600 (the ANN source, the only one not bounded by a stored list, raised to at least N). Before measuring,
the in-process app (FeedApp, no gRPC) checks that every measured member sends >= N candidates into the second
pass (what `rank` reads, after `filter`). Then closed loop at concurrency 1, the sizes interleaved in
--rounds rounds so drift on a shared machine spreads over all of them. First-pass work grows with N too:
this is the cost of a workflow configured for N, not of the second pass alone.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import csv
import math
import os
import platform
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import yaml
from _gateway_process import start_gateway as start_gateway_process

from gateway.app import FeedApp
from gateway.settings import GatewaySettings
from quasar.demo.build import build_world
from quasar.v1 import feed_pb2, feed_pb2_grpc
from remix.request import FeedRequest
from remix.steps import MERGED
from remix.steps.keys import FILTERED

# How the gateway sheds load: admission refuses (RESOURCE_EXHAUSTED), draining (UNAVAILABLE), a deadline it cannot
# meet (DEADLINE_EXCEEDED), and grpc core refusing calls past its pending-call bound (CANCELLED, gateway/backlog.py).
SHED_CODES = ("RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")
Row = dict[str, Any]


# --- gateway process --------------------------------------------------------------------------------------


def write_settings(path: Path, feature_time_s: float, workflows_dir: Path | None = None) -> Path:
    settings: dict[str, Any] = {"feature_time_s": feature_time_s}
    if workflows_dir is not None:
        settings["workflows_dir"] = str(workflows_dir.resolve())
    path.write_text(yaml.safe_dump(settings))
    return path


def start_gateway(world: Path, config: Path, workers: int) -> tuple[subprocess.Popen[str], str]:
    running = start_gateway_process(["--world", str(world), "--config", str(config), "--workers", str(workers)])
    return running.process, running.target


def stop_gateway(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- statistics and output --------------------------------------------------------------------------------


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max in ms; NaN when there is nothing to summarise (a step where every call was shed)."""
    if not samples_ms:
        return dict.fromkeys(("p50", "p90", "p99", "max"), math.nan)
    values = np.asarray(samples_ms)
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 99)} | {"max": float(values.max())}


def machine_label() -> str:
    """CPU count and model, for plot titles: figures from a 2-core shared VM and a workstation differ."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{usable} CPUs ({model}), {platform.system()} {platform.release()}"


def write_csv(path: Path, rows: list[Row]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})


def print_table(rows: list[Row]) -> None:
    def cell(value: Any) -> str:
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    columns = list(rows[0])
    widths = [max(len(c), *(len(cell(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(cell(row[c]).rjust(w) for c, w in zip(columns, widths, strict=True)))


# --- load curve -------------------------------------------------------------------------------------------
# (FeedServiceAsyncStub, what FeedServiceStub(aio channel) returns, exists only in the type stubs: annotations
# are not evaluated here, so naming it is safe.)


async def closed_loop(
    stub: feed_pb2_grpc.FeedServiceAsyncStub, members: np.ndarray, count: int, duration_s: float, concurrency: int
) -> tuple[float, Counter[str]]:
    """Answered calls per second with `concurrency` calls always outstanding, and the errors by code."""
    answered, errors = 0, Counter[str]()
    stop = time.perf_counter() + duration_s
    position = 0

    async def worker() -> None:
        nonlocal answered, position
        while time.perf_counter() < stop:
            member = int(members[position % len(members)])
            position += 1
            try:
                await stub.GetFeed(feed_pb2.GetFeedRequest(member_id=member, count=count), timeout=5)
                answered += 1
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answered / (time.perf_counter() - started), errors


async def open_loop_step(
    stub: feed_pb2_grpc.FeedServiceAsyncStub,
    rate: float,
    duration_s: float,
    members: np.ndarray,
    rng: np.random.Generator,
    count: int,
    deadline_s: float,
) -> Row:
    """Send calls at Poisson arrival times drawn in advance; never wait for an answer before the next send."""
    gaps = rng.exponential(1.0 / rate, size=int(rate * duration_s * 1.5) + 20)
    offsets = np.cumsum(gaps)
    offsets = offsets[offsets < duration_s]
    chosen = rng.choice(members, size=len(offsets))
    latencies: list[float] = []
    lags: list[float] = []
    codes: Counter[str] = Counter()
    degraded = narrowed = 0
    finished = 0.0

    async def one(slot: float, member: int) -> None:
        nonlocal degraded, narrowed, finished
        sent = time.perf_counter()
        lags.append((sent - slot) * 1e3)  # includes the wait for this task to be scheduled at all
        try:
            response = await stub.GetFeed(feed_pb2.GetFeedRequest(member_id=member, count=count), timeout=deadline_s)
            latencies.append((time.perf_counter() - sent) * 1e3)
            codes["OK"] += 1
            degraded += response.degraded
            narrowed += any(reason.startswith("overload:") for reason in response.degraded_reasons)
        except grpc.aio.AioRpcError as error:
            codes[error.code().name] += 1
        finished = max(finished, time.perf_counter())

    cpu_before = time.process_time()  # every thread of this process, gRPC's own included
    start = time.perf_counter() + 0.05
    tasks: list[asyncio.Task[None]] = []
    for offset, member in zip(offsets.tolist(), chosen.tolist(), strict=True):
        slot = start + offset
        delay = slot - time.perf_counter()
        # Behind schedule: send at once, but still yield so answers get read; the lag records how late it was.
        await asyncio.sleep(max(delay, 0.0))
        tasks.append(asyncio.create_task(one(slot, member)))
    await asyncio.gather(*tasks)
    wall_s = max(duration_s, finished - start)  # a step lasts its schedule even when its last arrival is early
    stats, lag = percentiles(latencies), percentiles(lags)
    return {
        "offered_rps": rate,
        "sent": len(offsets),
        "sent_rps": len(offsets) / duration_s,  # the drawn schedule's rate: Poisson, so off the target by chance
        "achieved_rps": codes["OK"] / wall_s,
        "p50_ms": stats["p50"],
        "p90_ms": stats["p90"],
        "p99_ms": stats["p99"],
        "max_ms": stats["max"],
        "ok": codes["OK"],
        **{code.lower(): codes[code] for code in SHED_CODES},
        "other_errors": sum(n for code, n in codes.items() if code not in ("OK", *SHED_CODES)),
        "degraded": degraded,
        "narrowed": narrowed,
        "lag_p50_ms": lag["p50"],
        "lag_p99_ms": lag["p99"],
        "lag_max_ms": lag["max"],
        "client_cpu": (time.process_time() - cpu_before) / wall_s,
    }


async def load_curve(args: argparse.Namespace, target: str, members: np.ndarray) -> tuple[list[Row], float]:
    rng = np.random.default_rng(args.seed)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = feed_pb2_grpc.FeedServiceStub(channel)
        await closed_loop(stub, members, args.count, 1.0, concurrency=4)  # warm-up: connection, caches, sessions
        rps = args.saturation_rps
        if rps is None:
            rps, errors = await closed_loop(stub, members, args.count, args.saturation_s, concurrency=16)
            shed = f", errors {dict(errors)}" if errors else ""
            print(f"saturation (closed loop, concurrency 16, {args.saturation_s:g} s): {rps:.1f} answered/s{shed}")
        rows = []
        for fraction in np.linspace(args.min_load, args.max_load, args.load_steps).tolist():
            await asyncio.sleep(args.pause_s)  # let the previous step's queue and the overload limiter settle
            row = await open_loop_step(stub, rps * fraction, args.step_s, members, rng, args.count, args.deadline_s)
            row = {"load_pct": round(100 * fraction), **row}
            print(
                f"  {fraction:4.0%} of saturation: offered {row['offered_rps']:6.1f}/s  achieved "
                f"{row['achieved_rps']:6.1f}/s  p99 {row['p99_ms']:7.1f} ms  shed "
                f"{sum(row[c.lower()] for c in SHED_CODES)}  lag p99 {row['lag_p99_ms']:6.1f} ms",
                flush=True,
            )
            rows.append(row)
    return rows, rps


def plot_load(rows: list[Row], saturation_rps: float, path: Path, title: str) -> None:
    offered = [r["offered_rps"] for r in rows]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, height_ratios=(3, 2))
    for key, style in (("p50_ms", "o-"), ("p90_ms", "s-"), ("p99_ms", "^-"), ("max_ms", "x:")):
        top.plot(offered, [r[key] for r in rows], style, label=key.removesuffix("_ms"))
    top.plot(offered, [r["lag_p99_ms"] for r in rows], "--", color="grey", label="generator lag p99")
    top.set_yscale("log")
    top.set_ylabel("latency of answered calls (ms, log)")
    top.legend(loc="upper left", fontsize="small")
    bottom.plot(offered, [r["achieved_rps"] for r in rows], "o-", color="tab:green", label="achieved (answered/s)")
    bottom.plot(offered, offered, ":", color="grey", label="offered")
    bottom.set_ylabel("requests/s")
    bottom.set_xlabel("offered load (requests/s, open loop)")
    shed = bottom.twinx()
    shares = [100 * sum(r[c.lower()] + 0.0 for c in SHED_CODES) / max(r["sent"], 1) for r in rows]
    shed.plot(offered, shares, "v--", color="tab:red", label="shed or expired (%)")
    shed.set_ylabel("shed or expired (% of sent)", color="tab:red")
    shed.set_ylim(bottom=0)
    lines = bottom.get_legend_handles_labels()[0] + shed.get_legend_handles_labels()[0]
    bottom.legend(lines, [str(line.get_label()) for line in lines], loc="upper left", fontsize="small")
    for axis in (top, bottom):
        axis.axvline(saturation_rps, color="black", linewidth=0.8, alpha=0.5)
        axis.grid(alpha=0.3)
    top.annotate("saturation", (saturation_rps, 1), xycoords=("data", "axes fraction"), ha="left", va="top")
    top.set_title(title, fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- candidates curve -------------------------------------------------------------------------------------


def candidate_variant(base: dict[str, Any], size: int) -> dict[str, Any]:
    """The feed workflow sending `size` candidates to the second pass.

    Limits, retrieves and quotas scale by size / the base cap, so the first pass is sized for N as a team
    would size it. The stored lists (network 400, hashtags 600, trending 600 ids) cannot grow, so the ANN
    source, which can return any number, is raised to at least N: the merge always has >= N to cap."""
    doc = copy.deepcopy(base)
    doc["workflow"] = f"feed_n{size}"
    merge = next(step for step in doc["steps"] if isinstance(step, dict) and step.get("type") == "merge")
    scale = size / merge["max_candidates"]
    merge["max_candidates"] = size
    branches = [b for s in doc["steps"] if isinstance(s, dict) and "parallel" in s for b in s["parallel"]["branches"]]
    floors = {b["name"]: size if b["type"] == "source.ann" else 1 for b in branches}
    for branch in branches:
        branch["limit"] = max(math.ceil(branch["limit"] * scale), floors[branch["name"]])
        branch["retrieve"] = max(math.ceil(branch["retrieve"] * scale), branch["limit"])
    merge["quotas"] = {name: max(math.ceil(q * scale), floors[name]) for name, q in merge["quotas"].items()}
    return doc


async def check_candidates(
    world: Path, workflows: Path, feature_time_s: float, names: dict[int, str], members: np.ndarray, count: int
) -> dict[int, tuple[int, int]]:
    """Per size: the fewest candidates merged and the fewest left after `filter` (what `rank` reads), over
    every measured member, run in-process; exits when a variant sends fewer than N to the second pass."""
    settings = GatewaySettings(
        world_dir=world, workflows_dir=workflows, metrics_port=None, feature_time_s=feature_time_s
    )
    app = FeedApp(settings)
    await app.start()
    found: dict[int, tuple[int, int]] = {}
    try:
        for size, name in names.items():
            merged = filtered = 1 << 30
            for member in np.unique(members).tolist():
                request = FeedRequest(request_id="check", member_id=member, count=count, workflow=name)
                context = (await app.get_feed(request, timeout_s=None)).context
                merged = min(merged, len(context.get(MERGED)))
                filtered = min(filtered, len(context.get(FILTERED)))
            found[size] = (merged, filtered)
    finally:
        await app.close()
    short = {size: f for size, (_, f) in found.items() if f < size}
    if short:
        raise SystemExit(f"variants sent fewer than N candidates to the second pass (N: fewest): {short}")
    return found


async def candidates_curve(
    args: argparse.Namespace, target: str, names: dict[int, str], members: np.ndarray
) -> list[Row]:
    latencies: dict[int, list[float]] = {size: [] for size in names}
    server_ms: dict[int, list[float]] = {size: [] for size in names}
    degraded: Counter[int] = Counter()
    errors: Counter[int] = Counter()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = feed_pb2_grpc.FeedServiceStub(channel)

        async def call(size: int, member: int) -> tuple[float, feed_pb2.GetFeedResponse]:
            request = feed_pb2.GetFeedRequest(member_id=member, count=args.count, workflow=names[size])
            started = time.perf_counter()
            response = await stub.GetFeed(request, timeout=5)
            return (time.perf_counter() - started) * 1e3, response

        for size in names:  # warm-up: each variant's first calls load its models' sessions and indexes
            for member in members[: args.warmup].tolist():
                await call(size, member)
        # Rounds interleave the sizes so that a neighbour's load on a shared machine lands on all of them.
        for round_index in range(args.rounds):
            for size in names:
                for member in members[round_index :: args.rounds].tolist():
                    try:
                        elapsed, response = await call(size, member)
                    except grpc.aio.AioRpcError:
                        errors[size] += 1
                        continue
                    latencies[size].append(elapsed)
                    server_ms[size].append(response.server_ms)
                    degraded[size] += response.degraded
    rows = []
    for size in names:
        stats = percentiles(latencies[size])
        rows.append(
            {
                "candidates": size,
                "requests": len(latencies[size]),
                "p50_ms": stats["p50"],
                "p90_ms": stats["p90"],
                "p99_ms": stats["p99"],
                "max_ms": stats["max"],
                "server_p50_ms": percentiles(server_ms[size])["p50"],
                "degraded": degraded[size],
                "errors": errors[size],
            }
        )
    return rows


def plot_candidates(rows: list[Row], path: Path, title: str) -> None:
    sizes = [r["candidates"] for r in rows]
    figure, axis = plt.subplots(figsize=(8, 5))
    for key, style in (("p50_ms", "o-"), ("p90_ms", "s-"), ("p99_ms", "^-")):
        axis.plot(sizes, [r[key] for r in rows], style, label=key.removesuffix("_ms"))
    axis.plot(sizes, [r["server_p50_ms"] for r in rows], "--", color="grey", label="p50 inside the gateway")
    axis.set_xlabel("second-pass candidates (merge max_candidates; sources scaled to fill it)")
    axis.set_ylabel("GetFeed latency (ms), concurrency 1")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", fontsize="small")
    axis.set_title(title, fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- main -------------------------------------------------------------------------------------------------


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("var/world"))
    parser.add_argument("--out", type=Path, default=Path("var/bench/curves"))
    parser.add_argument("--workers", type=int, default=1, help="gateway processes (default 1)")
    parser.add_argument("--count", type=int, default=50, help="items asked for per call")
    parser.add_argument("--seed", type=int, default=1)
    load = parser.add_argument_group("load curve")
    load.add_argument("--saturation-rps", type=float, help="skip the closed-loop measurement and use this")
    load.add_argument("--saturation-s", type=float, default=5.0, help="closed-loop run finding saturation")
    load.add_argument("--min-load", type=float, default=0.1, help="lowest offered rate, fraction of saturation")
    load.add_argument("--max-load", type=float, default=2.0, help="highest offered rate, fraction of saturation")
    load.add_argument("--load-steps", type=int, default=8)
    load.add_argument("--step-s", type=float, default=10.0, help="seconds of offered load per step")
    load.add_argument("--pause-s", type=float, default=2.0, help="idle seconds before each step")
    load.add_argument("--deadline-s", type=float, default=1.0, help="deadline of each open-loop call")
    sizes = parser.add_argument_group("candidates curve")
    sizes.add_argument("--sizes", type=int, nargs="+", default=[100, 250, 500, 1000, 1500, 2000])
    sizes.add_argument("--requests", type=int, default=300, help="measured calls per size")
    sizes.add_argument("--rounds", type=int, default=5, help="rounds the sizes are interleaved in")
    sizes.add_argument("--warmup", type=int, default=10, help="unmeasured calls per size first")
    args = parser.parse_args()

    matplotlib.use("Agg")  # files only, no display; pyplot picks its backend lazily, so this still applies
    manifest = build_world(args.world, progress=True)
    feature_time_s = float(manifest.training["reference_time_s"]) + 3600.0
    args.out.mkdir(parents=True, exist_ok=True)
    members = np.random.default_rng(args.seed).integers(1, manifest.members + 1, size=max(args.requests, 1000))
    title_tail = f"{machine_label()}\ngateway --workers {args.workers}, {datetime.now():%Y-%m-%d %H:%M}"

    # Load curve against the stock feed workflow.
    process, target = start_gateway(args.world, write_settings(args.out / "gateway.yaml", feature_time_s), args.workers)
    try:
        print(f"\nload curve: open loop, GetFeed count={args.count}, deadline {args.deadline_s} s, gateway at {target}")
        load_rows, saturation_rps = await load_curve(args, target, members)
    finally:
        stop_gateway(process)

    # Candidates curve: one gateway serving every variant by name.
    base = yaml.safe_load((args.world / "workflows" / "feed.yaml").read_text())
    workflows = args.out / "workflows"
    workflows.mkdir(exist_ok=True)
    for stale in workflows.glob("*.yaml"):
        stale.unlink()  # the gateway loads every YAML here: leftovers from another --sizes must not linger
    names = {}
    for size in sorted(args.sizes):
        variant = candidate_variant(base, size)
        (workflows / f"{variant['workflow']}.yaml").write_text(yaml.safe_dump(variant, sort_keys=False))
        names[size] = variant["workflow"]
    measured = members[: args.requests]
    print(f"\ncandidates curve: checking {len(np.unique(measured))} members per size in-process ...", flush=True)
    floors = await check_candidates(args.world, workflows, feature_time_s, names, measured, args.count)
    settings = write_settings(args.out / "gateway_candidates.yaml", feature_time_s, workflows)
    process, target = start_gateway(args.world, settings, args.workers)
    try:
        print(f"closed loop, concurrency 1, {args.requests} calls per size, gateway at {target}", flush=True)
        candidate_rows = await candidates_curve(args, target, names, measured)
    finally:
        stop_gateway(process)
    for row in candidate_rows:
        row["merged_min"], row["second_pass_min"] = floors[row["candidates"]]

    write_csv(args.out / "load.csv", load_rows)
    write_csv(args.out / "candidates.csv", candidate_rows)
    plot_load(load_rows, saturation_rps, args.out / "load.png", f"GetFeed latency vs offered load — {title_tail}")
    plot_candidates(
        candidate_rows, args.out / "candidates.png", f"GetFeed latency vs second-pass candidates — {title_tail}"
    )
    print(f"\nload curve (saturation {saturation_rps:.1f} answered/s; latency of answered calls, from their send)")
    print_table(load_rows)
    print("\ncandidates curve (closed loop, concurrency 1)")
    print_table(candidate_rows)
    written = (args.out / name for name in ("load.csv", "load.png", "candidates.csv", "candidates.png"))
    print(f"\nwrote {', '.join(map(str, written))}")


if __name__ == "__main__":
    asyncio.run(main())
