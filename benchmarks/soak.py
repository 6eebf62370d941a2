"""Soak: a real gateway process at moderate load for 10 minutes with 1% injected backend errors.

Usage: python benchmarks/soak.py [--world var/world] [--duration-s 600] [--warmup-s 60] [--rps 60]
                                 [--jobs-share 0.2] [--error-rate 0.01] [--csv var/bench/soak.csv]

Command: `make soak`. Not part of `make test` (the default suite): it runs for ten minutes.

What it does:

- builds the demo world if needed and starts a real CandidateService (grpc.aio, in this process) that
  answers `Retrieve` from the world's `jobs_network_lists` table as the reference service does, except that
  it fails 1% of calls (`--error-rate`; exactly every 100th, not at random) with UNAVAILABLE;
- starts one gateway process, `python -m gateway --config <settings> --workers 1 --port 0 --metrics-port 0`,
  on the world with the jobs workflow's candidate service `jobs_network` pointed at that service and the
  feature clock pinned (`feature_time_s`: the world's reference time + 1 h, as the integration tests do);
- sends GetFeed open loop at a fixed rate (`--rps`, default 60: the gateway then uses 30-50% of one core
  on the 2-vCPU development machine), 80% `feed` and 20% `jobs` (`--jobs-share`), random members, each call with a
  deadline (`--deadline-s`), and counts every answer by outcome: ok, degraded, or its status code;
- watches the gateway process from outside every `--sample-s` (10 s): RSS (/proc/<pid>/status VmRSS, and
  apart its private part RssAnon, where a leak shows, and RssFile, the pages of the memory-mapped store
  tables touched so far, which grows until every row a request can read has been read once), open file
  descriptors (/proc/<pid>/fd), threads, CPU; and the RPCs it has in flight, from its own Prometheus
  metrics (`grpc_server_started_total` - `grpc_server_handled_total`). The gateway exposes no count of its
  asyncio tasks and this script does not change it to get one: each call in flight is one handler task
  in grpc.aio, so the in-flight count stands for the tasks calls leave behind (tasks of other kinds,
  e.g. background loops, are not seen; the thread and fd counts are the other witnesses);
- prints a row per sample as it goes, then stops the load, waits `--idle-s` (10 s) idle, samples once more,
  stops the gateway with SIGTERM and writes the samples to `--csv`.

Goals (exit status 0 when all hold, 1 otherwise, with a line naming each goal that failed):

- RSS growth after warm-up (the first `--warmup-s`, 60 s) < 5%: the median RSS of the last minute of the
  load against that of the first minute after warm-up (`--rss-window-s`; medians, because RSS saws up
  and down by a few % as the allocator and the garbage collector work); the trend (MiB/min, a straight
  line through every sample after warm-up) is printed beside it;
- after the load and the idle pause, open fds and threads no more than at the end of warm-up, and no
  RPC in flight in the gateway;
- callers see no more errors than the backend was made to fail (the failing source is `fail_open`: its
  failures should come back as degraded answers, not as errors);
- the gateway stays up for the whole run and exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml

from gateway.deployment import Deployment
from kvstore.embedded import EmbeddedStore
from quasar.candidate_server import CandidateServicer, StoreCandidateLists
from quasar.demo.build import build_world, load_manifest
from quasar.v1 import candidates_pb2, candidates_pb2_grpc, feed_pb2, feed_pb2_grpc

CANDIDATE_SERVICE = "jobs_network"  # the jobs workflow's remote source (`network_jobs`) calls this service
CANDIDATE_TABLE = "jobs_network_lists"  # what the world's own candidate service serves it from
LISTENING = re.compile(r"listening on ([\d.]+):(\d+)")
METRICS_PORT = re.compile(r'"metrics_port":\s*(\d+)')
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the backend: the reference candidate service, failing a fixed share of calls -----------------------


class FailingCandidates(candidates_pb2_grpc.CandidateServiceServicer):
    """The reference CandidateService over the world's lists; call i (from 0) fails with UNAVAILABLE when
    floor((i + 1) * rate) > floor(i * rate), so exactly `rate` of calls fail, spread evenly."""

    def __init__(self, inner: CandidateServicer, rate: float) -> None:
        self._inner = inner
        self._rate = Fraction(rate).limit_denominator(1_000_000)  # exact: no float rounding at the boundaries
        self.calls = 0
        self.failed = 0

    async def Retrieve(
        self, request: candidates_pb2.RetrieveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> candidates_pb2.RetrieveResponse:
        index = self.calls
        self.calls += 1
        if int((index + 1) * self._rate) > int(index * self._rate):
            self.failed += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "injected by the soak: backend unavailable")
        return await self._inner.Retrieve(request, context)


# --- the gateway process ----------------------------------------------------------------------------------


def write_settings(directory: Path, world: Path, candidates_port: int) -> Path:
    """The world's engines with `jobs_network` moved to this process's service, the feature clock pinned."""
    engines = Deployment(world).engines_config().model_dump(mode="json")
    engines["candidate_services"][CANDIDATE_SERVICE]["target"] = f"127.0.0.1:{candidates_port}"
    engines["candidate_services"][CANDIDATE_SERVICE]["connect_wait_s"] = 2.0
    settings = {
        "world_dir": str(world.resolve()),
        "engines": engines,
        # Ages are computed against this instant, not the wall clock (tests/integration/conftest.py).
        "feature_time_s": float(load_manifest(world).training["reference_time_s"]) + 3600.0,
    }
    path = directory / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@dataclass
class Gateway:
    process: subprocess.Popen[str]
    port: int
    metrics_port: int
    tail: deque[str]  # its last output lines (JSON log, an access-log line per call), for a failure report

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode()
        return text


async def start_gateway(settings: Path, timeout_s: float = 120.0) -> Gateway:
    process = subprocess.Popen(  # noqa: ASYNC220 (started once; its output is read in a thread)
        [
            sys.executable,
            "-m",
            "gateway",
            "--config",
            str(settings),
            "--workers",
            "1",
            "--port",
            "0",
            "--metrics-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    tail: deque[str] = deque(maxlen=200)
    metrics_port = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                line = await asyncio.to_thread(process.stdout.readline)
                if not line:
                    raise SystemExit(f"gateway exited with {process.wait()} before listening:\n{''.join(tail)}")
                tail.append(line)
                if found := METRICS_PORT.search(line):
                    metrics_port = int(found.group(1))
                if found := LISTENING.search(line):
                    break
    except BaseException:
        process.kill()
        process.wait(timeout=30)
        raise
    if not metrics_port:
        process.kill()
        raise SystemExit(f"gateway did not report its metrics port:\n{''.join(tail)}")
    # Keep reading its output (one access-log line per call): a full pipe would block the gateway.
    threading.Thread(target=tail.extend, args=(process.stdout,), daemon=True).start()
    return Gateway(process, int(found.group(2)), metrics_port, tail)


def in_flight_rpcs(metrics: str) -> float:
    """RPCs started and not yet handled, over every method: each is a handler task in grpc.aio."""
    started = handled = 0.0
    for line in metrics.splitlines():
        if line.startswith("grpc_server_started_total{"):
            started += float(line.rsplit(" ", 1)[1])
        elif line.startswith("grpc_server_handled_total{"):
            handled += float(line.rsplit(" ", 1)[1])
    return started - handled


@dataclass(frozen=True)
class ProcessReading:
    rss_mib: float
    anon_mib: float  # RssAnon: heap and other private memory, where a leak shows
    file_mib: float  # RssFile: pages of mapped files (the store's tables, models) faulted in so far
    fds: int
    threads: int
    cpu_s: float


def read_process(pid: int) -> ProcessReading:
    """RSS, open fds, threads and CPU seconds (user + system) of `pid`, from /proc."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    rss_kib, anon_kib, file_kib = (int(status[key].split()[0]) for key in ("VmRSS", "RssAnon", "RssFile"))  # "1 kB"
    threads = int(status["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    # /proc/<pid>/stat: the fields after the command name (in parentheses); utime and stime are 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return ProcessReading(rss_kib / 1024, anon_kib / 1024, file_kib / 1024, fds, threads, cpu_s)


# --- load -------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Answers by outcome ('ok', 'degraded' or the status code's name); latencies of every call."""

    outcomes: Counter[str] = field(default_factory=Counter)
    by_workflow: dict[str, Counter[str]] = field(default_factory=dict)
    degraded_reasons: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)  # after warm-up
    error_details: Counter[str] = field(default_factory=Counter)

    def add(self, workflow: str, outcome: str, latency_s: float, warm: bool) -> None:
        self.outcomes[outcome] += 1
        self.by_workflow.setdefault(workflow, Counter())[outcome] += 1
        if warm:
            self.latencies_s.append(latency_s)


async def one_call(
    stub: feed_pb2_grpc.FeedServiceStub,
    request: feed_pb2.GetFeedRequest,
    deadline_s: float,
    tally: Tally,
    warm: bool,
) -> None:
    sent = time.perf_counter()
    try:
        reply = await stub.GetFeed(request, timeout=deadline_s)
    except grpc.aio.AioRpcError as error:
        outcome = error.code().name
        tally.error_details[f"{outcome}: {(error.details() or '')[:100]}"] += 1
    else:
        outcome = "degraded" if reply.degraded else "ok"
        tally.degraded_reasons.update(reason[:100] for reason in reply.degraded_reasons)
    tally.add(request.workflow, outcome, time.perf_counter() - sent, warm)


async def drive(
    stub: feed_pb2_grpc.FeedServiceStub,
    args: argparse.Namespace,
    members: int,
    tally: Tally,
    started: float,
    halt: asyncio.Event,
) -> None:
    """Open loop: call i is sent at started + i / rps whatever earlier calls are doing; until the end of
    the load or `halt`."""
    rng = random.Random(args.seed)
    pending: set[asyncio.Task[None]] = set()
    index = 0
    while not halt.is_set():
        at = started + index / args.rps
        if at - started >= args.duration_s:
            break
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        jobs = rng.random() < args.jobs_share
        request = feed_pb2.GetFeedRequest(
            member_id=rng.randint(1, members), count=20 if jobs else 50, workflow="jobs" if jobs else "feed"
        )
        task = asyncio.create_task(one_call(stub, request, args.deadline_s, tally, at - started >= args.warmup_s))
        pending.add(task)
        task.add_done_callback(pending.discard)
        index += 1
    if pending:
        await asyncio.wait(pending)


# --- samples ----------------------------------------------------------------------------------------------

COLUMNS = (
    "elapsed_s",
    "phase",
    "rps",
    "ok",
    "degraded",
    "errors",
    "rss_mib",
    "anon_mib",
    "file_mib",
    "fds",
    "threads",
    "cpu_pct",
    "in_flight",
    "backend_calls",
    "backend_failed",
    "error_codes",
)


class GatewayDied(Exception):
    pass


@dataclass
class Sampler:
    """Samples the gateway process; a gateway that has exited raises GatewayDied."""

    gateway: Gateway
    tally: Tally
    backend: FailingCandidates
    started: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    _last: tuple[float, Counter[str], float] | None = None  # time, outcomes, CPU seconds at the previous sample

    async def sample(self, phase: str) -> dict[str, Any]:
        now = time.perf_counter()
        if (status := self.gateway.process.poll()) is not None:
            raise GatewayDied(f"the gateway died with status {status} {now - self.started:.0f} s into the run")
        # /proc before the metrics scrape: the scrape's own connection would count as an fd.
        reading = read_process(self.gateway.process.pid)
        try:
            in_flight: int | str = round(in_flight_rpcs(await asyncio.to_thread(self.gateway.metrics)))
        except OSError as error:
            in_flight = f"? ({error})"
        outcomes = Counter(self.tally.outcomes)
        last_time, last_outcomes, last_cpu = self._last or (now, Counter(), reading.cpu_s)
        interval = outcomes - last_outcomes
        span = max(now - last_time, 1e-9)
        errors = {code: n for code, n in interval.items() if code not in ("ok", "degraded")}
        row = {
            "elapsed_s": round(now - self.started, 1),
            "phase": phase,
            "rps": round(interval.total() / span, 1) if self._last else 0.0,
            "ok": interval["ok"],
            "degraded": interval["degraded"],
            "errors": sum(errors.values()),
            "rss_mib": round(reading.rss_mib, 1),
            "anon_mib": round(reading.anon_mib, 1),
            "file_mib": round(reading.file_mib, 1),
            "fds": reading.fds,
            "threads": reading.threads,
            "cpu_pct": round(100 * (reading.cpu_s - last_cpu) / span, 1) if self._last else 0.0,
            "in_flight": in_flight,
            "backend_calls": self.backend.calls,
            "backend_failed": self.backend.failed,
            "error_codes": ";".join(f"{code}:{n}" for code, n in sorted(errors.items())),
        }
        self._last = (now, outcomes, reading.cpu_s)
        self.rows.append(row)
        print(
            f"{row['elapsed_s']:>7.0f} {phase:<7} {row['rps']:>6.1f} {row['ok']:>6} {row['degraded']:>5} "
            f"{row['errors']:>5} {row['rss_mib']:>8.1f} {row['anon_mib']:>6.1f} {row['file_mib']:>6.1f} "
            f"{row['fds']:>5} {row['threads']:>7} {row['cpu_pct']:>5.0f} "
            f"{row['in_flight']!s:>9} {row['backend_calls']:>8} {row['backend_failed']:>6}  {row['error_codes']}",
            flush=True,
        )
        return row


HEADER = (
    f"{'t (s)':>7} {'phase':<7} {'rps':>6} {'ok':>6} {'degr':>5} {'err':>5} {'RSS MiB':>8} {'anon':>6} {'file':>6} "
    f"{'fds':>5} {'threads':>7} {'cpu%':>5} {'in flight':>9} {'backend':>8} {'failed':>6}  error codes"
)


async def sample_every(sampler: Sampler, args: argparse.Namespace, stop: asyncio.Event) -> None:
    """A sample at every multiple of --sample-s from the start of the load, until `stop`; a gateway that
    died sets `stop` (the load ends) and raises GatewayDied."""
    tick = 1
    while not stop.is_set() and tick * args.sample_s < args.duration_s:  # the end of the load: run_load samples
        at = sampler.started + tick * args.sample_s
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, at - time.perf_counter()))
        except TimeoutError:
            elapsed = tick * args.sample_s
            try:
                await sampler.sample("warm-up" if elapsed <= args.warmup_s else "load")
            except GatewayDied:
                stop.set()
                raise
            tick += 1


# --- the run ----------------------------------------------------------------------------------------------


async def soak(args: argparse.Namespace) -> int:
    world: Path = args.world
    members = load_manifest(world).members
    store = EmbeddedStore(world / "store")
    await store.start()
    backend = FailingCandidates(
        CandidateServicer(StoreCandidateLists(store, default_table=CANDIDATE_TABLE)), args.error_rate
    )
    server = grpc.aio.server()
    candidates_pb2_grpc.add_CandidateServiceServicer_to_server(backend, server)
    candidates_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    gateway: Gateway | None = None
    scratch = tempfile.TemporaryDirectory(prefix="soak-")
    try:
        gateway = await start_gateway(write_settings(Path(scratch.name), world, candidates_port))
        print(
            f"gateway pid {gateway.process.pid} on 127.0.0.1:{gateway.port} (metrics {gateway.metrics_port}); "
            f"candidate service {CANDIDATE_SERVICE} on 127.0.0.1:{candidates_port}, failing "
            f"{args.error_rate:.1%} of calls with UNAVAILABLE\n"
            f"load: {args.rps:g} calls/s open loop, {1 - args.jobs_share:.0%} feed / {args.jobs_share:.0%} jobs, "
            f"deadline {args.deadline_s:g} s, {args.duration_s:g} s (warm-up {args.warmup_s:g} s), then "
            f"{args.idle_s:g} s idle\n",
            flush=True,
        )
        return await run_load(args, gateway, backend, members)
    finally:
        if gateway is not None and gateway.process.poll() is None:
            gateway.process.kill()
            gateway.process.wait(timeout=30)
        await server.stop(None)
        await store.close()
        scratch.cleanup()


async def run_load(args: argparse.Namespace, gateway: Gateway, backend: FailingCandidates, members: int) -> int:
    tally = Tally()
    print(HEADER, flush=True)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        stub = feed_pb2_grpc.FeedServiceStub(channel)
        started = time.perf_counter()
        sampler = Sampler(gateway, tally, backend, started)
        await sampler.sample("start")
        stop = asyncio.Event()
        sampling = asyncio.create_task(sample_every(sampler, args, stop))
        await drive(stub, args, members, tally, started, stop)
        stop.set()
        try:
            await sampling
            end_of_load = await sampler.sample("load")
            await asyncio.sleep(args.idle_s)
            idle = await sampler.sample("idle")
        except GatewayDied as died:
            write_csv(args.csv, sampler.rows)
            print("".join(list(gateway.tail)[-30:]), file=sys.stderr)
            print(f"GOAL FAILED: {died} (calls so far: {dict(tally.outcomes.most_common())})")
            return 1
    # The client's channel is closed now; the gateway keeps no call of ours.
    alive = gateway.process.poll() is None
    exit_status: int | None = None
    if alive:
        gateway.process.send_signal(signal.SIGTERM)
        try:
            exit_status = await asyncio.to_thread(gateway.process.wait, 60)
        except subprocess.TimeoutExpired:
            exit_status = None
    else:
        exit_status = gateway.process.returncode
    write_csv(args.csv, sampler.rows)
    return report(args, sampler.rows, end_of_load, idle, tally, backend, alive, exit_status, gateway)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def report(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    end_of_load: dict[str, Any],
    idle: dict[str, Any],
    tally: Tally,
    backend: FailingCandidates,
    alive: bool,
    exit_status: int | None,
    gateway: Gateway,
) -> int:
    # Samples under load from the end of warm-up on (the end-of-load sample included).
    after_warm = [
        row
        for row in rows
        if row["phase"] in ("warm-up", "load") and row["elapsed_s"] >= args.warmup_s - args.sample_s / 2
    ] or [end_of_load]
    warm = after_warm[0]
    # RSS saws up and down by a few % as the allocator and the garbage collector work, so growth compares
    # the median of the first window after warm-up with the median of the last window of the load.
    window_s = min(args.rss_window_s, (args.duration_s - args.warmup_s) / 2)
    first = [row for row in after_warm if row["elapsed_s"] < args.warmup_s + window_s - args.sample_s / 2] or [warm]
    last = [row for row in after_warm if row["elapsed_s"] > args.duration_s - window_s + args.sample_s / 2] or [
        end_of_load
    ]

    def median(window: list[dict[str, Any]], column: str) -> float:
        return float(np.median([row[column] for row in window]))

    def span(window: list[dict[str, Any]]) -> str:
        return f"{window[0]['elapsed_s']:.0f}-{window[-1]['elapsed_s']:.0f} s"

    growth = 100 * (median(last, "rss_mib") - median(first, "rss_mib")) / median(first, "rss_mib")
    anon_growth = 100 * (median(last, "anon_mib") - median(first, "anon_mib")) / median(first, "anon_mib")
    failures: list[str] = []
    total = tally.outcomes.total()
    errors = total - tally.outcomes["ok"] - tally.outcomes["degraded"]
    error_rate = errors / max(1, total)
    injected_rate = backend.failed / max(1, backend.calls)
    slope = float("nan")
    if len(after_warm) >= 3:
        minutes = np.array([row["elapsed_s"] for row in after_warm]) / 60
        slope = float(np.polyfit(minutes, np.array([row["rss_mib"] for row in after_warm]), 1)[0])
    latencies = np.asarray(tally.latencies_s) * 1e3

    print(f"\nsummary ({total} calls; samples in {args.csv})")
    print(f"  outcomes: {dict(tally.outcomes.most_common())}")
    for workflow, counts in sorted(tally.by_workflow.items()):
        print(f"    {workflow:<5} {dict(counts.most_common())}")
    for reason, count in tally.degraded_reasons.most_common(5):
        print(f"    degraded {count:>5} x {reason}")
    for detail, count in tally.error_details.most_common(5):
        print(f"    error    {count:>5} x {detail}")
    if latencies.size:
        print(
            f"  latency after warm-up ({latencies.size} calls, every outcome): "
            f"p50 {np.percentile(latencies, 50):.1f} ms, p99 {np.percentile(latencies, 99):.1f} ms, "
            f"max {latencies.max():.1f} ms"
        )
    print(
        f"  backend: {backend.calls} Retrieve calls, {backend.failed} failed on purpose ({injected_rate:.2%}); "
        f"callers saw {errors} errors ({error_rate:.2%}) and {tally.outcomes['degraded']} degraded answers"
    )
    print(
        f"  RSS: {rows[0]['rss_mib']:.1f} MiB at start; median {median(first, 'rss_mib'):.1f} after warm-up "
        f"({span(first)}), {median(last, 'rss_mib'):.1f} at the end of the load ({span(last)}): "
        f"growth {growth:+.2f}% (goal < {args.max_rss_growth_pct:g}%); {idle['rss_mib']:.1f} after "
        f"{args.idle_s:g} s idle; trend {slope:+.2f} MiB/min over {len(after_warm)} samples from "
        f"{warm['elapsed_s']:.0f} s, range {min(r['rss_mib'] for r in after_warm):.1f}-"
        f"{max(r['rss_mib'] for r in after_warm):.1f}"
    )
    print(
        f"    of which private (RssAnon) {median(first, 'anon_mib'):.1f} -> {median(last, 'anon_mib'):.1f} MiB "
        f"({anon_growth:+.2f}%), mapped files (RssFile) {median(first, 'file_mib'):.1f} -> "
        f"{median(last, 'file_mib'):.1f} MiB (pages of the store's tables touched so far)"
    )
    print(
        f"  fds: {rows[0]['fds']} at start, {warm['fds']} after warm-up, {idle['fds']} after idle; "
        f"threads: {rows[0]['threads']}, {warm['threads']}, {idle['threads']}; "
        f"RPCs in flight after idle: {idle['in_flight']} (the gateway's count of handler tasks; it exposes no "
        "asyncio task count)"
    )
    print(f"  gateway: {'up for the whole run' if alive else 'DIED during the run'}, exit status {exit_status}")

    if growth >= args.max_rss_growth_pct:
        failures.append(f"RSS grew {growth:.2f}% after warm-up (goal < {args.max_rss_growth_pct:g}%)")
    if idle["fds"] > warm["fds"]:
        failures.append(f"open fds did not come back: {idle['fds']} after idle, {warm['fds']} after warm-up")
    if idle["threads"] > warm["threads"]:
        failures.append(f"threads did not come back: {idle['threads']} after idle, {warm['threads']} after warm-up")
    if idle["in_flight"] != 0:
        failures.append(f"{idle['in_flight']} RPCs still in flight in the gateway after idle")
    if error_rate > injected_rate:
        failures.append(f"callers saw {error_rate:.2%} errors, more than the {injected_rate:.2%} injected")
    if not alive or exit_status != 0:
        failures.append(f"the gateway {'died' if not alive else 'exited'} with status {exit_status}")
        print("".join(list(gateway.tail)[-30:]), file=sys.stderr)
    for failure in failures:
        print(f"GOAL FAILED: {failure}")
    if not failures:
        print("all goals met")
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("var/world"))
    parser.add_argument("--duration-s", type=float, default=600.0, help="load time, warm-up included")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="RSS growth is measured from its end")
    parser.add_argument("--rps", type=float, default=60.0, help="calls per second, open loop")
    parser.add_argument("--jobs-share", type=float, default=0.2, help="share of calls to the jobs workflow")
    parser.add_argument("--error-rate", type=float, default=0.01, help="share of backend calls failed")
    parser.add_argument("--deadline-s", type=float, default=0.5, help="each call's gRPC deadline")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle pause after the load, before the last sample")
    parser.add_argument("--max-rss-growth-pct", type=float, default=5.0)
    parser.add_argument(
        "--rss-window-s", type=float, default=60.0, help="RSS growth: median of this long after warm-up vs at the end"
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--csv", type=Path, default=Path("var/bench/soak.csv"))
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        raise SystemExit("the soak reads the gateway's /proc entries: Linux only")
    build_world(args.world, progress=True)
    sys.exit(asyncio.run(soak(args)))


if __name__ == "__main__":
    main()
