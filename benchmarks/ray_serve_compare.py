"""The feed workflow served by Quasar and by Ray Serve: same machine, world, models and requests, in one run.

Usage: nice -n 10 python benchmarks/ray_serve_compare.py [--world var/world] [--requests 400]
           [--concurrency 1 4 16] [--csv var/bench/ray_serve_compare.csv] [--variants ...]
Smoke run (every variant starts, answers the same items, is torn down; figures too few to quote):
       nice -n 10 python benchmarks/ray_serve_compare.py --requests 40 --concurrency 1 4

Variants, each started, checked, measured and torn down in turn (N = the cores this process may use):
- quasar-1, quasar-N: `python -m gateway --workers 1|N`, the gateway as shipped, in its own processes.
- ray-ingress-1: one Serve replica runs the whole workflow in process (a `FeedApp` started in the
  replica's async constructor) behind Serve's gRPC proxy; the replica converts with `gateway.convert`,
  as Quasar's servicer does.
- ray-ingress-N: the same with one replica per core.
- ray-composed: Serve's idiomatic composition: the ingress replica runs the workflow, but the second-pass
  ranker (`feed_ranker`) is a deployment of its own, ONNX Runtime on the same ranker.onnx behind
  `@serve.batch` (concurrent calls' rows stacked into one run), called through a DeploymentHandle: the
  ingress's router sends route `feed_ranker` to an engine that forwards to the handle.

What is held equal, and why:
- Answers. Every server pins the clock time-based features read (`feature_time_s`, read once at the
  start of the run), so answers are deterministic; before its load each variant's answers for a few
  members must equal, item by item and in order, those of an in-process `FeedApp`, or the run stops.
- Work. Quasar's overload controls (an adaptive limit, narrowing the second pass when slow) are set out
  of reach, since Ray has neither: every request ranks the full candidate set everywhere.
- The client: grpc.aio, closed loop, `concurrency` callers with a channel (one connection) each, over a
  fixed list of random members (`--seed`), after a warm-up. It runs in a process of its own, the same
  for every variant, ON THE SAME CORES as the servers: client CPU competes with them, as it would for
  any co-located caller; its CPU per request is printed beside the servers'.
- Ray: one local instance (num_cpus = N, no dashboard, a 256 MiB object store) serves the three Ray
  variants one after the other, so its startup is paid once. Replicas ask for at most one CPU each.
  The ingress takes up to 64 calls at once (Serve's default of 5 would queue the rest at the proxy).

Goal (the issue's): Quasar's requests/s >= 3x each Ray variant's at equal concurrency, and its p50 <= 0.5x.
Results also go to a CSV (`--csv`); what Ray costs here (startup, memory, idle CPU) is printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Collection, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
import ray
from ray import serve
from ray.serve.config import gRPCOptions

from engines import Engine, EnginesConfig, ModelMetadata, ModelRef, Offloader, RouteConfig, TargetConfig, Tensors
from engines.errors import EngineTimeout, EngineUnavailable
from engines.onnx import OnnxEngine
from gateway.app import FeedApp
from gateway.convert import RequestLimits, to_feed_request, to_response
from gateway.deployment import Deployment
from gateway.settings import GatewaySettings
from gateway.workers import available_cores
from quasar.demo.build import build_world
from quasar.v1 import feed_pb2, feed_pb2_grpc
from remix.request import FeedRequest

RANKER = "feed_ranker"  # the logical model the composed variant moves to a deployment of its own
RANKER_INPUT, RANKER_OUTPUT = "features", "scores"  # ranker.onnx: features [n, 77] -> scores [n, 4]
RAY_RANKER_ENGINE = "ray_ranker"
SERVICER = "quasar.v1.feed_pb2_grpc.add_FeedServiceServicer_to_server"
THROUGHPUT_GOAL, P50_GOAL = 3.0, 0.5
CALL_TIMEOUT_S = 5.0  # the client's deadline; the workflow's own budget (0.5 s) binds first everywhere
INGRESS_MAX_ONGOING = 64  # above the highest concurrency: calls wait in the replica, not at the proxy
RANKER_MAX_BATCH, RANKER_BATCH_WAIT_S = 16, 0.002  # wait: the repo's Serve default; size: top concurrency
CHECK_MEMBERS = 5
# One connection per channel: grpc otherwise shares one subchannel among channels with equal arguments,
# and SO_REUSEPORT spreads Quasar's workers by connection.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


# --- Ray Serve side: deployments and the engine that calls the ranker deployment ----------------------------


@serve.deployment(name="FeedRanker")
class FeedRanker:
    """The second-pass ranker alone: `predict(features[n, 77]) -> scores[n, 4]`, concurrent calls batched.

    Runs the engine Quasar runs in process (`OnnxEngine`, one intra-op thread), so scores match by
    construction; `metadata()` is that engine's signature, which the ingress's router checks at startup."""

    async def __init__(self, model_path: str) -> None:  # type: ignore[misc]  # Serve awaits it before any call
        self._offloader = Offloader(max_workers=1, max_pending=4 * RANKER_MAX_BATCH)
        self._engine = OnnxEngine("ray-ranker", {RANKER: Path(model_path)}, self._offloader, intra_op_threads=1)
        await self._engine.start()
        self._metadata = await self._engine.metadata(ModelRef(RANKER))

    def metadata(self) -> ModelMetadata:
        return self._metadata

    async def predict(self, features: np.ndarray) -> np.ndarray:
        scores: np.ndarray = await self._predict_batch(features)
        return scores

    @serve.batch(max_batch_size=RANKER_MAX_BATCH, batch_wait_timeout_s=RANKER_BATCH_WAIT_S)
    async def _predict_batch(self, features: list[np.ndarray]) -> list[np.ndarray]:
        """One ONNX run over every call's rows, split back per call."""
        stacked = np.concatenate(features) if len(features) > 1 else features[0]
        scores = (await self._engine.infer(ModelRef(RANKER), {RANKER_INPUT: stacked}))[RANKER_OUTPUT]
        return np.split(scores, np.cumsum([len(part) for part in features])[:-1])


class HandleEngine:
    """`engines.base.Engine` over the `FeedRanker` deployment: each `infer` is one awaited handle call.

    Timeouts cancel the call at Serve and raise `EngineTimeout`; any other failure is `EngineUnavailable`,
    so the router's fallback (feed_ranker_whole, in process) behaves as for any remote engine."""

    def __init__(self, name: str, handle: Any) -> None:
        self.name = name
        self._handle = handle  # ray.serve.handle.DeploymentHandle (untyped SDK)
        self._metadata: ModelMetadata | None = None

    async def start(self) -> None:
        self._metadata = await self._handle.metadata.remote()

    async def ready(self) -> bool:
        return self._metadata is not None

    async def metadata(self, model: ModelRef) -> ModelMetadata:
        if self._metadata is None or model.name != RANKER:
            raise EngineUnavailable(f"serves only {RANKER!r}, once started", target=self.name, model=str(model))
        return self._metadata

    async def infer(self, model: ModelRef, inputs: Tensors, *, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        where = {"target": self.name, "model": str(model)}
        response = self._handle.predict.remote(inputs[RANKER_INPUT])
        try:
            async with asyncio.timeout(timeout_s):
                scores: np.ndarray = await response
        except TimeoutError:
            response.cancel()
            raise EngineTimeout(f"no answer within {timeout_s}s", **where) from None
        except asyncio.CancelledError:
            response.cancel()
            raise
        except Exception as error:
            raise EngineUnavailable(f"ranker deployment: {type(error).__name__}: {error}", **where) from error
        return {RANKER_OUTPUT: scores}

    async def close(self) -> None:
        self._metadata = None


@dataclass(frozen=True)
class HandleEngineConfig:
    """Stands in an `EnginesConfig` beside the validated kinds: `build_engines` only calls `build`."""

    handle: Any

    def build(self, name: str, offloader: Offloader) -> Engine:
        return HandleEngine(name, self.handle)


def ranker_on_handle(world: Path, handle: Any) -> EnginesConfig:
    """The world's engines and routes, with route `feed_ranker` sent to the ranker deployment.

    `FeedApp` takes engines from settings (`GatewaySettings.engines`), which is the hook used here; the
    config is assembled without validation because a handle engine is no configurable kind, and the
    router still checks that every route names a known engine."""
    base = Deployment(world).engines_config()
    route = RouteConfig(targets=[TargetConfig(engine=RAY_RANKER_ENGINE, model=RANKER)])
    engines: dict[str, Any] = {**base.engines, RAY_RANKER_ENGINE: HandleEngineConfig(handle)}
    return EnginesConfig.model_construct(
        engines=engines,
        routes={**base.routes, RANKER: route},
        candidate_services=base.candidate_services,
    )


@serve.deployment(name="FeedIngress")
class FeedIngress:
    """Serve's gRPC ingress for FeedService: the whole workflow in the replica, as Quasar runs it.

    With `ranker` (a handle to `FeedRanker`), the second pass is called through that handle instead."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor before the first call
        self, world_dir: str, feature_time_s: float, ranker: Any = None
    ) -> None:
        world = Path(world_dir)
        settings = GatewaySettings(
            world_dir=world,
            metrics_port=None,
            feature_time_s=feature_time_s,
            engines=None if ranker is None else ranker_on_handle(world, ranker),
        )
        self._limits = RequestLimits(
            default_count=settings.default_count,
            max_count=settings.max_count,
            max_context_entries=settings.max_context_entries,
            max_context_bytes=settings.max_context_bytes,
        )
        self._app = FeedApp(settings)
        await self._app.start()

    async def GetFeed(self, request: feed_pb2.GetFeedRequest) -> feed_pb2.GetFeedResponse:
        """What Quasar's servicer does, less admission and access logging (Serve logs each call itself).
        No caller deadline reaches a replica, so the workflow's own budget applies, as at Quasar."""
        started = time.perf_counter()
        feed_request = to_feed_request(request, self._limits, self._app.workflow_names)
        answer = await self._app.get_feed(feed_request, timeout_s=None)
        return to_response(
            answer.context,
            answer.feed,
            workflow_version=answer.workflow_version,
            server_ms=(time.perf_counter() - started) * 1e3,
        )


# --- The client: runs in a process of its own (see run_load) -------------------------------------------------


async def _load(
    target: str, metadata: Sequence[tuple[str, str]], members: list[int], concurrency: int, count: int
) -> tuple[list[float], float, float, int, dict[str, int]]:
    """Closed loop: `concurrency` callers, one channel each, take members in turn until none is left.
    Returns latencies (ms), wall seconds, client CPU seconds, degraded answers, errors by status code."""
    channels = [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(concurrency)]
    try:
        for channel in channels:  # connect first: connection setup is not what is measured
            await asyncio.wait_for(channel.channel_ready(), timeout=10)
        pending = iter(members)  # shared by the callers: one member per call, each exactly once
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        degraded = 0

        async def caller(channel: grpc.aio.Channel) -> None:
            nonlocal degraded
            stub = feed_pb2_grpc.FeedServiceStub(channel)
            for member in pending:
                request = feed_pb2.GetFeedRequest(member_id=member, count=count)
                started = time.perf_counter()
                try:
                    response = await stub.GetFeed(request, timeout=CALL_TIMEOUT_S, metadata=metadata)
                except grpc.aio.AioRpcError as error:
                    errors[error.code().name] += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1e3)
                degraded += response.degraded
                if len(response.items) != count:
                    # An answer short of items (e.g. the workflow's budget ran out before ranking): counted as
                    # an error of its own kind, so a struggling variant shows in its row instead of ending the run.
                    errors["SHORT_ANSWER"] += 1

        cpu_started, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(caller(channel) for channel in channels))
        return latencies, time.perf_counter() - started, time.process_time() - cpu_started, degraded, dict(errors)
    finally:
        for channel in channels:
            await channel.close(grace=None)


async def _items(
    target: str, metadata: Sequence[tuple[str, str]], members: list[int], count: int, wait_s: float
) -> list[tuple[list[int], bool]]:
    """Item ids (in order) and the degraded flag of one answer per member, asked one at a time. Retries
    the first call for up to `wait_s`: Serve's proxy may learn of a new application after `serve.run`."""
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = feed_pb2_grpc.FeedServiceStub(channel)
        give_up = time.monotonic() + wait_s
        answers: list[tuple[list[int], bool]] = []
        for member in members:
            request = feed_pb2.GetFeedRequest(member_id=member, count=count)
            while True:
                try:
                    response = await stub.GetFeed(request, timeout=CALL_TIMEOUT_S, metadata=metadata)
                    break
                except grpc.aio.AioRpcError as error:
                    if answers or time.monotonic() > give_up:
                        raise
                    if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                        raise
                    await asyncio.sleep(0.2)
            answers.append(([item.item_id for item in response.items], response.degraded))
        return answers


def run_load(
    target: str, metadata: Sequence[tuple[str, str]], members: list[int], concurrency: int, count: int
) -> tuple[list[float], float, float, int, dict[str, int]]:
    """Entry point in the client process (plain types in and out: it crosses a process boundary)."""
    return asyncio.run(_load(target, metadata, members, concurrency, count))


def fetch_items(
    target: str, metadata: Sequence[tuple[str, str]], members: list[int], count: int, wait_s: float = 30.0
) -> list[tuple[list[int], bool]]:
    return asyncio.run(_items(target, metadata, members, count, wait_s))


# --- Measurement ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """One variant at one concurrency. CPU is per answered request, in ms of CPU time."""

    variant: str
    concurrency: int
    requests: int
    p50_ms: float
    p99_ms: float
    requests_per_s: float
    server_cpu_ms: float
    client_cpu_ms: float
    degraded: int
    errors: int


@dataclass(frozen=True)
class Variant:
    name: str
    target: str
    metadata: tuple[tuple[str, str], ...]  # Serve's proxy picks the application from `application`
    servers: list[psutil.Process]  # every process serving it (for CPU and memory)
    startup_s: float


def cpu_s(processes: Sequence[psutil.Process]) -> dict[int, float]:
    """CPU seconds so far per live process."""
    totals = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        totals[process.pid] = times.user + times.system
    return totals


def cpu_spent_s(processes: Sequence[psutil.Process], before: dict[int, float]) -> float:
    """CPU seconds spent since `before` by processes alive both times."""
    after = cpu_s(processes)
    return sum(after[pid] - before[pid] for pid in after.keys() & before.keys())


def _label(process: psutil.Process) -> str:
    """A Ray worker's title (`ray::...`), else the script or program a process runs."""
    command = process.cmdline() or [process.name()]
    scripts = [part for part in command[1:] if part.endswith(".py")]
    head = command[0] if command[0].startswith("ray::") or not scripts else scripts[0]
    return Path(head.split()[0]).name


def pss_mib(processes: Sequence[psutil.Process]) -> dict[str, float]:
    """Proportional set size per process (shared pages split among sharers, so the sum is honest), by
    command line head."""
    sizes: dict[str, float] = {}
    for process in processes:
        try:
            label = _label(process)
            sizes[f"{label} [{process.pid}]"] = process.memory_full_info().pss / 2**20
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return sizes


def descendants(pid: int, exclude: Collection[int] = ()) -> list[psutil.Process]:
    return [process for process in psutil.Process(pid).children(recursive=True) if process.pid not in exclude]


def measure(variant: Variant, pool: ProcessPoolExecutor, members: list[int], concurrency: int, count: int) -> Level:
    before = cpu_s(variant.servers)
    latencies, wall_s, client_cpu_s, degraded, errors = pool.submit(
        run_load, variant.target, variant.metadata, members, concurrency, count
    ).result()
    server_cpu_s = cpu_spent_s(variant.servers, before)
    if errors:
        print(f"  {variant.name} concurrency={concurrency}: failed calls {errors}")
    if not latencies:
        raise SystemExit(f"{variant.name}: no call succeeded at concurrency {concurrency}")
    answered = len(latencies)
    return Level(
        variant=variant.name,
        concurrency=concurrency,
        requests=answered,
        p50_ms=float(np.percentile(latencies, 50)),
        p99_ms=float(np.percentile(latencies, 99)),
        requests_per_s=answered / wall_s,
        server_cpu_ms=server_cpu_s * 1e3 / answered,
        client_cpu_ms=client_cpu_s * 1e3 / answered,
        degraded=degraded,
        errors=sum(errors.values()),
    )


def check_items(
    variant: Variant, pool: ProcessPoolExecutor, members: list[int], count: int, reference: list[list[int]]
) -> None:
    """Stop the run unless the variant answers every check member with the reference's items, in order."""
    answers = pool.submit(fetch_items, variant.target, variant.metadata, members, count).result()
    for member, (items, degraded), expected in zip(members, answers, reference, strict=True):
        if items != expected:
            first = next((i for i, (a, b) in enumerate(zip(items, expected, strict=False)) if a != b), None)
            raise SystemExit(
                f"{variant.name}: member {member} answered other items than the in-process reference "
                f"(first difference at position {first}, {len(items)} vs {len(expected)} items, degraded={degraded})"
            )
    print(f"  same items as the in-process reference for members {members}")


def run_variant(
    variant: Variant,
    pool: ProcessPoolExecutor,
    members: list[int],
    args: argparse.Namespace,
    reference: list[list[int]],
) -> list[Level]:
    """Warm up, check the answers, then measure each concurrency level; print the variant's table."""
    top = max(args.concurrency)
    pool.submit(fetch_items, variant.target, variant.metadata, members[:1], args.count).result()  # serving?
    pool.submit(run_load, variant.target, variant.metadata, members[: max(20, 4 * top)], top, args.count).result()
    check_items(variant, pool, members[:CHECK_MEMBERS], args.count, reference)
    memory = pss_mib(variant.servers)
    print(
        f"  started in {variant.startup_s:.1f} s; {len(memory)} server processes, "
        f"PSS {sum(memory.values()):.0f} MiB after warm-up"
    )
    levels = [measure(variant, pool, members, concurrency, args.count) for concurrency in args.concurrency]
    print(
        f"  {'concurrency':>11} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'server CPU':>11} {'client CPU':>11}"
        f" {'degraded':>9} {'errors':>7}"
    )
    for level in levels:
        print(
            f"  {level.concurrency:>11} {level.p50_ms:>8.2f} {level.p99_ms:>8.2f} {level.requests_per_s:>8.1f}"
            f" {level.server_cpu_ms:>8.2f} ms {level.client_cpu_ms:>8.2f} ms {level.degraded:>9} {level.errors:>7}"
        )
    return levels


# --- Quasar side ---------------------------------------------------------------------------------------------


def start_quasar(world: Path, workers: int, feature_time_s: float) -> tuple[subprocess.Popen[str], Variant]:
    env = {
        **os.environ,
        "QUASAR_FEATURE_TIME_S": repr(feature_time_s),
        # Out of reach: no adaptive rejection, no narrowed second pass (Ray does neither; same work everywhere).
        "QUASAR_OVERLOAD_TARGET_LATENCY_S": "60",
        "QUASAR_OVERLOAD_QUALITY_LATENCY_S": "60",
    }
    command = [sys.executable, "-m", "gateway", "--world", str(world), "--port", "0", "--metrics-port", "0"]
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--workers", str(workers)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert process.stdout is not None
    for line in process.stdout:
        found = re.search(r"listening on ([\d.]+:\d+)", line)
        if found:
            startup_s = time.perf_counter() - started
            # Keep draining its output (an access-log line per request): a full pipe would block the gateway.
            threading.Thread(target=process.stdout.read, daemon=True).start()
            servers = [psutil.Process(process.pid), *descendants(process.pid)]
            return process, Variant(f"quasar-{workers}", found.group(1), (), servers, startup_s)
    raise SystemExit(f"quasar gateway exited before listening (code {process.wait()})")


def stop_quasar(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- Ray side ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class RayCost:
    """Seconds to start, and what Ray's own processes hold and burn with nothing deployed."""

    init_s: float = 0.0
    serve_start_s: float = 0.0
    idle_processes: int = 0
    idle_pss_mib: float = 0.0
    idle_cores: float = 0.0
    deploy_s: dict[str, float] = field(default_factory=dict)  # serve.run per variant
    pss_by_process: dict[str, float] = field(default_factory=dict)  # with ray-composed deployed


def start_ray(cores: int, exclude: Collection[int], idle_s: float) -> tuple[RayCost, int]:
    """One local Ray with Serve and its gRPC proxy; returns its cost so far and the proxy's port."""
    cost = RayCost()
    started = time.perf_counter()
    # "local": a Ray of our own even when another runs on this machine (joining it, serve.shutdown would stop
    # someone else's Serve).
    ray.init(
        address="local",
        num_cpus=cores,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 * 2**20,
    )
    cost.init_s = time.perf_counter() - started
    grpc_port = free_port()
    started = time.perf_counter()
    serve.start(
        http_options={"host": "127.0.0.1", "port": free_port()},
        grpc_options=gRPCOptions(port=grpc_port, grpc_servicer_functions=[SERVICER]),
    )
    cost.serve_start_s = time.perf_counter() - started
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve narrates every deployment on the driver
    # What Ray and Serve cost with nothing deployed: memory, and CPU over a quiet interval.
    processes = descendants(os.getpid(), exclude)
    cost.idle_processes = len(processes)
    cost.idle_pss_mib = sum(pss_mib(processes).values())
    before = cpu_s(processes)
    time.sleep(idle_s)
    cost.idle_cores = cpu_spent_s(processes, before) / idle_s
    return cost, grpc_port


def deploy_ray(name: str, world: Path, feature_time_s: float, cores: int) -> None:
    """Run application `name` (one of the ray-* variants) and return once its replicas are up."""
    world_dir = str(world.resolve())
    if name == "ray-composed":
        ranker = FeedRanker.options(  # type: ignore[attr-defined]
            # Serve caps calls queued at a replica; a batch can only fill from the calls it may hold.
            max_ongoing_requests=2 * RANKER_MAX_BATCH,
            ray_actor_options={"num_cpus": min(1.0, cores / 2)},
        ).bind(str(world.resolve() / "models" / "ranker.onnx"))
        app = FeedIngress.options(  # type: ignore[attr-defined]
            max_ongoing_requests=INGRESS_MAX_ONGOING, ray_actor_options={"num_cpus": min(1.0, cores / 2)}
        ).bind(world_dir, feature_time_s, ranker)
    else:
        replicas = 1 if name == "ray-ingress-1" else cores
        app = FeedIngress.options(  # type: ignore[attr-defined]
            num_replicas=replicas,
            max_ongoing_requests=INGRESS_MAX_ONGOING,
            ray_actor_options={"num_cpus": min(1.0, cores / replicas)},
        ).bind(world_dir, feature_time_s)
    serve.run(app, name=name, route_prefix=f"/{name}")


# --- Report --------------------------------------------------------------------------------------------------


def print_ratios(results: dict[str, list[Level]]) -> None:
    """Quasar over each Ray variant at equal concurrency, and whether the goals hold."""
    quasars = [name for name in results if name.startswith("quasar")]
    rays = [name for name in results if name.startswith("ray")]
    if not quasars or not rays:
        return
    print(f"\nratios at equal concurrency (goal: throughput >= {THROUGHPUT_GOAL:.1f}x and p50 <= {P50_GOAL:.1f}x)")
    print(f"  {'quasar':<10} {'ray':<14} {'concurrency':>11} {'throughput':>11} {'p50':>7}  goal")
    for quasar in quasars:
        met = True
        for ray_name in rays:
            for ours, theirs in zip(results[quasar], results[ray_name], strict=True):
                throughput = ours.requests_per_s / theirs.requests_per_s
                p50 = ours.p50_ms / theirs.p50_ms
                holds = throughput >= THROUGHPUT_GOAL and p50 <= P50_GOAL
                met &= holds
                print(
                    f"  {quasar:<10} {ray_name:<14} {ours.concurrency:>11} {throughput:>10.2f}x {p50:>6.2f}x"
                    f"  {'yes' if holds else 'no'}"
                )
        print(f"  -> {quasar} {'meets' if met else 'does not meet'} the goal against every Ray variant here")


def print_ray_cost(cost: RayCost, cores: int) -> None:
    print(f"\nwhat Ray costs on this machine ({cores} cores)")
    print(f"  ray.init {cost.init_s:.1f} s, serve.start (controller, proxies) {cost.serve_start_s:.1f} s")
    print(
        f"  idle, nothing deployed: {cost.idle_processes} processes, PSS {cost.idle_pss_mib:.0f} MiB, "
        f"{cost.idle_cores * 100:.1f}% of one core"
    )
    for name, seconds in cost.deploy_s.items():
        print(f"  serve.run {name}: {seconds:.1f} s (replicas started, world loaded)")
    if cost.pss_by_process:
        print("  PSS by process with ray-composed deployed:")
        for label, mib in sorted(cost.pss_by_process.items(), key=lambda item: -item[1]):
            print(f"    {mib:7.0f} MiB  {label}")


def write_csv(path: Path, results: dict[str, list[Level]], cores: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["cores", *(column.name for column in fields(Level))])
        for levels in results.values():
            for level in levels:
                writer.writerow([cores, *asdict(level).values()])


# --- Main ----------------------------------------------------------------------------------------------------

VARIANTS = ("quasar-1", "quasar-N", "ray-ingress-1", "ray-ingress-N", "ray-composed")


async def reference_items(world: Path, feature_time_s: float, members: list[int], count: int) -> list[list[int]]:
    """The in-process answers every variant must match: FeedApp with the same pinned feature clock."""
    app = FeedApp(GatewaySettings(world_dir=world, metrics_port=None, feature_time_s=feature_time_s))
    await app.start()
    try:
        items: list[list[int]] = []
        for rounds in range(2):  # a first round warms up, so no cold step times out in the one kept
            items = []
            for member in members:
                request = FeedRequest(request_id=f"check-{rounds}", member_id=member, count=count)
                answer = await app.get_feed(request, timeout_s=None)
                if answer.context.degraded and rounds:
                    raise SystemExit(f"reference answer for member {member} is degraded: {answer.context.failures}")
                response = to_response(
                    answer.context, answer.feed, workflow_version=answer.workflow_version, server_ms=0
                )
                items.append([item.item_id for item in response.items])
        return items
    finally:
        await app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("var/world"))
    parser.add_argument("--requests", type=int, default=400, help="measured requests per variant and concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--csv", type=Path, default=Path("var/bench/ray_serve_compare.csv"))
    parser.add_argument("--idle-s", type=float, default=3.0, help="quiet interval over which Ray's idle CPU is read")
    args = parser.parse_args()

    manifest = build_world(args.world, progress=True)
    cores = available_cores()
    feature_time_s = float(int(time.time()))
    rng = np.random.default_rng(args.seed)
    members = [int(member) for member in rng.integers(1, manifest.members + 1, size=args.requests)]
    check = members[:CHECK_MEMBERS]
    print(
        f"\nfeed workflow, count={args.count}, {args.requests} requests per level, concurrency {args.concurrency}, "
        f"feature clock pinned at {feature_time_s:.0f}\nclient: grpc.aio closed loop in a process of its own, "
        f"ON THE SAME {cores} CORES as the servers (its CPU per request is shown beside theirs)"
    )
    reference = asyncio.run(reference_items(args.world, feature_time_s, check, args.count))

    results: dict[str, list[Level]] = {}
    ray_cost: RayCost | None = None
    # Spawned before Ray starts and reused by every variant, so the client is the same process throughout.
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        pool.submit(os.getpid).result()  # starts the client process
        # The client and multiprocessing's helper: every later child of this process is Ray's.
        not_servers = {process.pid for process in descendants(os.getpid())}
        for name in [v for v in args.variants if v.startswith("quasar")]:
            workers = 1 if name == "quasar-1" else cores
            process, variant = start_quasar(args.world, workers, feature_time_s)
            try:
                print(f"\n{variant.name}: `python -m gateway --workers {workers}` at {variant.target}")
                results[variant.name] = run_variant(variant, pool, members, args, reference)
            finally:
                stop_quasar(process)

        ray_variants = [v for v in args.variants if v.startswith("ray")]
        if ray_variants:
            try:
                ray_cost, grpc_port = start_ray(cores, not_servers, args.idle_s)
                for name in ray_variants:
                    started = time.perf_counter()
                    deploy_ray(name, args.world, feature_time_s, cores)
                    startup_s = time.perf_counter() - started
                    ray_cost.deploy_s[name] = startup_s
                    servers = descendants(os.getpid(), not_servers)
                    variant = Variant(name, f"127.0.0.1:{grpc_port}", (("application", name),), servers, startup_s)
                    print(f"\n{name}: Serve's gRPC proxy at {variant.target}, Ray's processes count as the server")
                    results[name] = run_variant(variant, pool, members, args, reference)
                    if name == "ray-composed":
                        ray_cost.pss_by_process = pss_mib(servers)
                    serve.delete(name)  # its replicas go away before the next variant starts
            finally:
                if ray.is_initialized():
                    serve.shutdown()
                    ray.shutdown()

    print_ratios(results)
    if ray_cost is not None:
        print_ray_cost(ray_cost, cores)
    write_csv(args.csv, results, cores)
    print(f"\nresults written to {args.csv}")


if __name__ == "__main__":
    main()
