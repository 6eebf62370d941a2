"""`quasar serve --workers 2`: two gateway processes on one port behind a supervisor, as users run it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml

from gateway.deployment import Deployment
from quasar.v1 import admin_pb2, admin_pb2_grpc, feed_pb2, feed_pb2_grpc
from tests.integration.conftest import feature_time_s

TOKEN = "workers-admin-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
# Each new channel is a new connection, which the kernel gives to either worker: 24 of them all landing
# on one worker has probability 2 * 2**-24.
FRESH_CONNECTIONS = 24
GATEWAY = (sys.executable, "-m", "gateway", "--port", "0", "--metrics-port", "0")


@dataclass
class Cluster:
    process: subprocess.Popen[str]
    target: str
    metrics_url: str
    output: list[str]


def write_settings(tmp_path: Path, world: Path, **extra: object) -> Path:
    """The world's engines plus a second XGBoost engine serving the same first pass, so a route can move."""
    engines = Deployment(world).engines_config().model_dump(mode="json")
    engines["engines"]["xgb_b"] = engines["engines"]["local_xgboost"]
    settings = {
        "world_dir": str(world),
        "admin_token": TOKEN,
        "engines": engines,
        "drain_grace_s": 5.0,
        "feature_time_s": feature_time_s(world),
        **extra,
    }
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


async def start_cluster(settings: Path, workers: int = 2) -> Cluster:
    process = subprocess.Popen(  # noqa: ASYNC220 (started once; its output is read off the loop)
        [
            sys.executable,
            "-m",
            "gateway",
            "--config",
            str(settings),
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--workers",
            str(workers),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    target = metrics_port = None
    while target is None:
        line = await asyncio.to_thread(process.stdout.readline)
        if not line:
            raise AssertionError(f"exited with {process.wait()} before listening:\n{''.join(output)}")
        output.append(line)
        if found := re.search(r'"metrics_port":\s*(\d+)', line):
            metrics_port = found.group(1)
        if found := re.search(r"listening on ([\d.]+:\d+) \(2 workers\)", line):
            target = found.group(1)
    # Keep reading its output (a full pipe would block the workers).
    asyncio.get_running_loop().run_in_executor(None, lambda: output.extend(process.stdout or ()))
    assert metrics_port is not None, "the supervisor logs its metrics port before it reports listening"
    return Cluster(process, target, f"http://127.0.0.1:{metrics_port}/metrics", output)


@pytest.fixture(scope="module")
async def cluster(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    running = await start_cluster(write_settings(tmp_path_factory.mktemp("workers"), small_world))
    yield running
    running.process.kill()
    running.process.wait(timeout=30)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def handled_ok(metrics: str) -> float:
    pattern = r'grpc_server_handled_total\{[^}]*grpc_code="OK"[^}]*grpc_method="GetFeed"[^}]*\} ([\d.e+]+)'
    return sum(float(value) for value in re.findall(pattern, metrics))


async def test_every_worker_serves_and_the_supervisor_reports_their_sum(cluster: Cluster) -> None:
    before = handled_ok(await asyncio.to_thread(scrape, cluster.metrics_url))
    for member in range(1, FRESH_CONNECTIONS + 1):
        async with grpc.aio.insecure_channel(cluster.target) as channel:
            reply = await feed_pb2_grpc.FeedServiceStub(channel).GetFeed(
                feed_pb2.GetFeedRequest(member_id=member, count=10), timeout=10
            )
            assert len(reply.items) == 10
    metrics = await asyncio.to_thread(scrape, cluster.metrics_url)
    assert handled_ok(metrics) - before == FRESH_CONNECTIONS
    # Gauges stay per process: one series per worker pid.
    pids = set(re.findall(r'quasar_engine_breaker_state\{[^}]*pid="(\d+)"', metrics))
    assert len(pids) == 2, metrics


async def routes_seen_on_fresh_connections(target: str) -> set[str]:
    versions = set()
    for _ in range(FRESH_CONNECTIONS):
        async with grpc.aio.insecure_channel(target) as channel:
            reply = await admin_pb2_grpc.AdminServiceStub(channel).GetRoutes(
                admin_pb2.GetRoutesRequest(), metadata=AUTH, timeout=5
            )
            versions.add(reply.version)
    return versions


async def test_a_route_change_is_in_force_on_every_worker_when_it_is_acknowledged(cluster: Cluster) -> None:
    (before,) = await routes_seen_on_fresh_connections(cluster.target)
    async with grpc.aio.insecure_channel(cluster.target) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        moved = await admin.SetRoutes(
            admin_pb2.SetRoutesRequest(
                routes="first_pass: {targets: [{engine: xgb_b, model: first_pass}]}", expected_version=before
            ),
            metadata=AUTH,
            timeout=30,
        )
        assert moved.changed == ["first_pass"]
        assert await routes_seen_on_fresh_connections(cluster.target) == {moved.version}

        # Another change based on the old version is refused, whichever worker takes it.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await admin.SetRoutes(
                admin_pb2.SetRoutesRequest(routes="", remove=["first_pass"], expected_version=before),
                metadata=AUTH,
                timeout=30,
            )
        assert raised.value.code() == grpc.StatusCode.ABORTED
        assert f"routes are at version {moved.version}" in (raised.value.details() or "")

        # A change a worker cannot apply is refused whole and names the problem, not a worker's traceback.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await admin.SetRoutes(
                admin_pb2.SetRoutesRequest(routes="first_pass: {targets: [{engine: nope, model: first_pass}]}"),
                metadata=AUTH,
                timeout=30,
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "nope" in (raised.value.details() or "")
        assert await routes_seen_on_fresh_connections(cluster.target) == {moved.version}

        back = await admin.SetRoutes(
            admin_pb2.SetRoutesRequest(routes="first_pass: {targets: [{engine: local_xgboost, model: first_pass}]}"),
            metadata=AUTH,
            timeout=30,
        )
    assert back.version == before
    assert await routes_seen_on_fresh_connections(cluster.target) == {before}


async def test_sigterm_drains_every_worker_and_the_supervisor_exits_cleanly(small_world: Path, tmp_path: Path) -> None:
    running = await start_cluster(write_settings(tmp_path, small_world))
    try:
        async with grpc.aio.insecure_channel(running.target) as channel:
            reply = await feed_pb2_grpc.FeedServiceStub(channel).GetFeed(
                feed_pb2.GetFeedRequest(member_id=7), timeout=10
            )
            assert len(reply.items) == 50
        running.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(running.process.wait, 60) == 0
    finally:
        if running.process.poll() is None:
            running.process.kill()
    await asyncio.sleep(0)  # let the reader thread take the last lines (not a timing wait: one loop turn)
    log = "".join(running.output)
    assert log.count('"gateway stopped"') == 2, log  # each worker drained and stopped


async def test_a_configuration_problem_stops_the_start_and_is_reported_once(small_world: Path, tmp_path: Path) -> None:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "feed.yaml").write_text("workflow: feed\nversion: '1'\nsteps:\n- type: no.such.step\n")
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "gateway",
            "--config",
            str(write_settings(tmp_path, small_world)),
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--workers",
            "2",
        ],
        env={**os.environ, "QUASAR_WORKFLOWS_DIR": str(workflows)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(problems) == 1, result.stderr
    assert "no.such.step" in problems[0]
    assert "Traceback" not in result.stderr


async def wait_for_line(cluster: Cluster, pattern: str, *, after: int, timeout_s: float = 60.0) -> re.Match[str]:
    """The first output line past index `after` matching `pattern` (the output grows as the cluster logs)."""
    async with asyncio.timeout(timeout_s):
        while True:
            for line in cluster.output[after:]:
                if found := re.search(pattern, line):
                    return found
            await asyncio.sleep(0.05)  # polling a condition with a deadline, not a timing assumption


async def test_a_worker_that_dies_is_replaced_and_brought_to_the_current_routes(cluster: Cluster) -> None:
    metrics = await asyncio.to_thread(scrape, cluster.metrics_url)
    pids = sorted(set(re.findall(r'quasar_engine_breaker_state\{[^}]*pid="(\d+)"', metrics)))
    async with grpc.aio.insecure_channel(cluster.target) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        moved = await admin.SetRoutes(
            admin_pb2.SetRoutesRequest(routes="first_pass: {targets: [{engine: xgb_b, model: first_pass}]}"),
            metadata=AUTH,
            timeout=30,
        )
    seen = len(cluster.output)
    os.kill(int(pids[0]), signal.SIGKILL)
    await wait_for_line(cluster, r'"message":\s*"worker died"', after=seen)
    ready = await wait_for_line(cluster, r'"message":\s*"worker ready".*"pid":\s*(\d+)', after=seen)
    assert ready.group(1) not in pids  # a new process
    # The replacement started from the configured routes and was moved to the changed ones before serving.
    assert await routes_seen_on_fresh_connections(cluster.target) == {moved.version}
    async with grpc.aio.insecure_channel(cluster.target) as channel:
        await admin_pb2_grpc.AdminServiceStub(channel).SetRoutes(
            admin_pb2.SetRoutesRequest(routes="first_pass: {targets: [{engine: local_xgboost, model: first_pass}]}"),
            metadata=AUTH,
            timeout=30,
        )


async def releases_seen_on_fresh_connections(target: str) -> set[str]:
    seen = set()
    for member in range(1, FRESH_CONNECTIONS + 1):
        async with grpc.aio.insecure_channel(target) as channel:
            reply = await feed_pb2_grpc.FeedServiceStub(channel).GetFeed(
                feed_pb2.GetFeedRequest(member_id=member, count=5), timeout=10
            )
            (ranker,) = [m.target for m in reply.model_versions if m.model == "feed_ranker"]
            seen.add((reply.release, ranker))
    return seen


async def test_a_release_is_in_force_on_every_worker_when_acknowledged_and_on_a_replacement(
    cluster: Cluster, small_world: Path
) -> None:
    (manifest,) = sorted((small_world / "releases").glob("*.yaml"))
    release = yaml.safe_load(manifest.read_text())["release"]
    async with grpc.aio.insecure_channel(cluster.target) as channel:
        status = await admin_pb2_grpc.AdminServiceStub(channel).ApplyRelease(
            admin_pb2.ApplyReleaseRequest(manifest_path=str(manifest)), metadata=AUTH, timeout=120
        )
    assert status.changed.stable == release
    assert any(check.name == "scores on local_onnx" and check.ok for check in status.checks)
    expected = {(release, f"local_onnx/feed_ranker@{release}")}
    assert await releases_seen_on_fresh_connections(cluster.target) == expected

    metrics = await asyncio.to_thread(scrape, cluster.metrics_url)
    pids = sorted(set(re.findall(r'quasar_engine_breaker_state\{[^}]*pid="(\d+)"', metrics)))
    seen = len(cluster.output)
    os.kill(int(pids[-1]), signal.SIGKILL)
    await wait_for_line(cluster, r'"message":\s*"worker died"', after=seen)
    await wait_for_line(cluster, r'"message":\s*"worker ready"', after=seen)
    # The replacement started without the release (no state directory) and was given it before serving.
    assert await releases_seen_on_fresh_connections(cluster.target) == expected
