"""Fault injection on real processes: gateway processes started from a settings file, a candidate service
whose latency a test shapes and whose calls it records, and a load loop that keeps every call's outcome.

Everything listens on 127.0.0.1, port 0 unless a test asks for a port (a restarted gateway takes its
predecessor's). The candidate service runs in the test's own event loop, so tests wait on its events and
compare its clock (`time.monotonic`) with the callers'.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml

from gateway.deployment import Deployment
from kvstore.embedded import EmbeddedStore
from quasar.candidate_server import CandidateServicer, StoreCandidateLists
from quasar.v1 import candidates_pb2, candidates_pb2_grpc, feed_pb2
from tests.integration.conftest import feature_time_s, world_workflow

CANDIDATE_SERVICE = "jobs_network"  # the jobs workflow's remote source calls this service
REMOTE_SOURCE = "network_jobs"  # ... from this step
FIRST_REMOTE_SOURCE = "network_jobs_first"  # `jobs_twice` calls it from this step first
CANDIDATE_TABLE = "jobs_network_lists"  # what the world's own candidate service serves it from
LISTENING = re.compile(r"listening on ([\d.]+):(\d+)")


# --- gateway processes ---------------------------------------------------------------------------------


def write_settings(directory: Path, world: Path, *, candidates_port: int | None = None, **extra: Any) -> Path:
    """A settings file for `python -m gateway --config`: the world's engines (the jobs candidate service
    moved to `candidates_port` when given), feature ages pinned to the world's reference time."""
    engines = Deployment(world).engines_config().model_dump(mode="json")
    if candidates_port is not None:
        engines["candidate_services"][CANDIDATE_SERVICE]["target"] = f"127.0.0.1:{candidates_port}"
        engines["candidate_services"][CANDIDATE_SERVICE]["connect_wait_s"] = 2.0
    settings = {
        "world_dir": str(world),
        "engines": engines,
        "drain_grace_s": 5.0,
        "feature_time_s": feature_time_s(world),
        **extra,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def write_jobs_variants(directory: Path, world: Path, *, source_timeout_s: float, workflow_timeout_s: float) -> Path:
    """The world's workflows plus two variants of the jobs workflow whose remote source waits up to
    `source_timeout_s` (the shipped one gives up after 0.1 s), so the caller's deadline is what binds:
    `jobs_patient`, and `jobs_twice`, which first calls the service from a step `network_jobs_first`
    before the usual sources, so the second call starts with part of the budget spent."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("feed", "jobs"):
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(world_workflow(world, name)))
    patient = world_workflow(world, "jobs")
    patient["workflow"] = "jobs_patient"
    patient["timeout_s"] = workflow_timeout_s
    for step in patient["steps"]:
        for branch in step.get("parallel", {}).get("branches", []):
            if branch["name"] == REMOTE_SOURCE:
                branch["timeout_s"] = source_timeout_s
    (directory / "jobs_patient.yaml").write_text(yaml.safe_dump(patient))

    twice = yaml.safe_load(yaml.safe_dump(patient))
    twice["workflow"] = "jobs_twice"
    steps = twice["steps"]
    parallel = next(i for i, step in enumerate(steps) if "parallel" in step)
    remote = next(b for b in steps[parallel]["parallel"]["branches"] if b["name"] == REMOTE_SOURCE)
    steps.insert(parallel, {**remote, "name": FIRST_REMOTE_SOURCE})
    merge = next(step for step in steps if step.get("type") == "merge")
    merge["sources"].append(FIRST_REMOTE_SOURCE)
    (directory / "jobs_twice.yaml").write_text(yaml.safe_dump(twice))
    return directory


@dataclass
class GatewayProcess:
    """`python -m gateway --workers 1`: one gateway process; `output` holds its stdout and stderr lines
    (its JSON log, one access-log line per call) as they come."""

    process: subprocess.Popen[str]
    port: int
    output: list[str]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def access_log(self) -> list[dict[str, Any]]:
        """The access-log entries written so far (one per GetFeed call the process handled)."""
        entries = []
        for line in list(self.output):
            if '"quasar.requests"' in line:
                entries.append(json.loads(line))
        return entries

    def outcomes(self) -> Counter[str]:
        """Access-log outcomes so far: 'ok', 'degraded', or the status a call got (e.g. 'UNAVAILABLE')."""
        return Counter(entry["outcome"] for entry in self.access_log())

    def log(self) -> str:
        return "".join(self.output)

    def stop_now(self) -> None:
        """Kill it (cleanup after a failed test; a test that stops a gateway sends SIGTERM itself)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


async def start_gateway(settings: Path, *, port: int = 0, timeout_s: float = 60.0) -> GatewayProcess:
    """Start a gateway and return once it listens; its output is read off the loop from then on."""
    process = subprocess.Popen(  # noqa: ASYNC220 (started once; its output is read in a thread)
        [
            sys.executable,
            "-m",
            "gateway",
            "--config",
            str(settings),
            "--port",
            str(port),
            "--metrics-port",
            "0",
            "--workers",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                line = await asyncio.to_thread(process.stdout.readline)
                if not line:
                    raise AssertionError(f"gateway exited with {process.wait()} before listening:\n{''.join(output)}")
                output.append(line)
                if found := LISTENING.search(line):
                    break
    except BaseException:
        process.kill()
        process.wait(timeout=30)
        raise
    # Keep reading its output: a full pipe would block the gateway.
    asyncio.get_running_loop().run_in_executor(None, lambda: output.extend(process.stdout or ()))
    return GatewayProcess(process, int(found.group(2)), output)


async def sigterm_and_wait(gateway: GatewayProcess, timeout_s: float = 30.0) -> int:
    """SIGTERM (the gateway drains, then exits); its exit status."""
    gateway.process.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(gateway.process.wait, timeout_s)


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` after `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.02)  # polling a condition with a deadline, not a timing assumption
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s:.0f} s: {what}") from None


# --- a candidate service with shaped latency ------------------------------------------------------------


@dataclass
class BackendCall:
    """One Retrieve call as the service saw it; times are `time.monotonic()` readings of this process."""

    request_id: str
    member_id: int
    source: str
    entered_s: float
    deadline_s: float | None  # context.time_remaining() on entry: the deadline the caller gave the call
    delay_s: float
    held: bool
    outcome: str = "running"  # answered | cancelled
    ended_s: float | None = None
    remaining_at_cancel_s: float | None = None  # > 0: cancelled by the caller, not by its own deadline
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


class ShapedCandidates(candidates_pb2_grpc.CandidateServiceServicer):
    """The reference CandidateService over the world's lists, behind a latency a test shapes: each call
    waits `base_delay_s`, every `slow_every`-th call `slow_factor` times that (0: none slowed), a call
    from a source named in `source_delay_s` that long instead, and a call whose request id is in `hold`
    until it is cancelled. Every call is recorded in `calls`, in arrival order."""

    def __init__(self, inner: CandidateServicer) -> None:
        self._inner = inner
        self.base_delay_s = 0.0
        self.slow_factor = 10.0
        self.slow_every = 0
        self.hold: set[str] = set()
        self.source_delay_s: dict[str, float] = {}
        self.calls: list[BackendCall] = []

    def shape(self, *, base_delay_s: float, slow_every: int = 0, slow_factor: float = 10.0) -> None:
        self.base_delay_s, self.slow_every, self.slow_factor = base_delay_s, slow_every, slow_factor

    async def Retrieve(
        self, request: candidates_pb2.RetrieveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> candidates_pb2.RetrieveResponse:
        entered_s = time.monotonic()
        slow = self.slow_every > 0 and len(self.calls) % self.slow_every == self.slow_every - 1
        delay_s = self.source_delay_s.get(request.source, self.base_delay_s * (self.slow_factor if slow else 1.0))
        call = BackendCall(
            request.request_id,
            request.member_id,
            request.source,
            entered_s,
            context.time_remaining(),
            delay_s,
            held=request.request_id in self.hold,
        )
        self.calls.append(call)
        try:
            if call.held:
                await asyncio.Event().wait()  # until cancelled
            # The injected fault is latency itself: the service "works" this long before answering.
            await asyncio.sleep(delay_s)
            reply = await self._inner.Retrieve(request, context)
        except asyncio.CancelledError:
            call.outcome, call.ended_s = "cancelled", time.monotonic()
            call.remaining_at_cancel_s = context.time_remaining()
            call.cancelled.set()
            raise
        call.outcome, call.ended_s = "answered", time.monotonic()
        return reply


@asynccontextmanager
async def shaped_candidate_service(world: Path) -> AsyncIterator[tuple[ShapedCandidates, int]]:
    """The service on 127.0.0.1 port 0, serving the world's jobs-network lists; yields it and its port."""
    store = EmbeddedStore(world / "store")
    await store.start()
    servicer = ShapedCandidates(CandidateServicer(StoreCandidateLists(store, default_table=CANDIDATE_TABLE)))
    server = grpc.aio.server()
    candidates_pb2_grpc.add_CandidateServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, port
    finally:
        await server.stop(None)
        await store.close()


# --- load and its figures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One GetFeed call as its caller saw it. `sent_s`: time.monotonic() before the call, whose deadline
    was `timeout_s` later; `details`: the status message ('' when OK)."""

    phase: str
    request_id: str
    member_id: int
    sent_s: float
    timeout_s: float
    latency_s: float
    code: grpc.StatusCode
    details: str = ""
    degraded_reasons: tuple[str, ...] = ()
    degraded: bool = False
    targets: tuple[tuple[str, str], ...] = ()  # (model, target that answered) from the reply's model_versions

    def target(self, model: str) -> str:
        """The target that served `model` for this call ('' when it was not called or the call failed)."""
        return dict(self.targets).get(model, "")

    @property
    def ok(self) -> bool:
        return self.code == grpc.StatusCode.OK


GetFeed = Callable[..., Awaitable[feed_pb2.GetFeedResponse]]


async def call(get_feed: GetFeed, phase: str, request: feed_pb2.GetFeedRequest, timeout_s: float) -> Sample:
    sent_s = time.monotonic()
    try:
        reply = await get_feed(request, timeout=timeout_s)
    except grpc.aio.AioRpcError as error:
        return Sample(
            phase,
            request.request_id,
            request.member_id,
            sent_s,
            timeout_s,
            time.monotonic() - sent_s,
            error.code(),
            error.details() or "",
        )
    return Sample(
        phase,
        request.request_id,
        request.member_id,
        sent_s,
        timeout_s,
        time.monotonic() - sent_s,
        grpc.StatusCode.OK,
        degraded_reasons=tuple(reply.degraded_reasons),
        degraded=reply.degraded,
        targets=tuple((m.model, m.target) for m in reply.model_versions),
    )


def percentile_ms(values: Iterable[float], q: float) -> float:
    array = np.asarray(list(values), dtype=np.float64)
    return float(np.percentile(array, q) * 1e3) if array.size else float("nan")


def figures(
    title: str, rows: dict[str, list[Sample]], *, lost: Callable[[Sample], bool], baseline: str | None = None
) -> str:
    """A table a human reads with `pytest -s`: per row, calls, failures and their rate, degraded answers,
    latency p50/p99/max of every call (failed ones included), p50/p99 over those of the `baseline` row,
    and lost calls (`lost` says which); under each row, its failures by status and message."""
    base = rows[baseline] if baseline is not None else []
    base_p50 = percentile_ms((s.latency_s for s in base), 50)
    base_p99 = percentile_ms((s.latency_s for s in base), 99)
    lines = [
        title,
        f"  {'':<26} {'calls':>6} {'failed':>7} {'rate':>7} {'degraded':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'p50/base':>9} {'p99/base':>9} {'lost':>5}",
    ]
    for name, samples in rows.items():
        failed = sum(not s.ok for s in samples)
        latencies = [s.latency_s for s in samples]
        p50, p99 = percentile_ms(latencies, 50), percentile_ms(latencies, 99)
        lines.append(
            f"  {name:<26} {len(samples):>6} {failed:>7} {failed / max(1, len(samples)):>7.1%} "
            f"{sum(bool(s.degraded_reasons) for s in samples):>9} {p50:>8.1f} {p99:>8.1f} "
            f"{max(latencies, default=0.0) * 1e3:>8.1f} {_ratio(p50, base_p50):>9} {_ratio(p99, base_p99):>9} "
            f"{sum(lost(s) for s in samples):>5}"
        )
        failures = Counter(f"{s.code.name}: {s.details[:80]}" for s in samples if not s.ok)
        lines.extend(f"  {'':<26} {count:>4} x {failure}" for failure, count in sorted(failures.items()))
    return "\n".join(lines)


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "-"
