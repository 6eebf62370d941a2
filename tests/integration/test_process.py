"""The gateway as users run it: `quasar serve` in its own process (uvloop), stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.backlog import EXPERIMENTS_ENV
from quasar.cli import main
from quasar.v1 import feed_pb2, feed_pb2_grpc


@pytest.fixture
def gateway_process(small_world: Path, test_workflows: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--world", str(small_world), "--port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # As a user starts it: grpc's experiments are the entry point's business (gateway.backlog).
        env={name: value for name, value in os.environ.items() if name != EXPERIMENTS_ENV},
    )
    try:
        assert process.stdout is not None
        target = None
        started: list[str] = []
        for line in process.stdout:
            started.append(line)
            found = re.search(r"listening on ([\d.]+:\d+)", line)
            if found:
                target = found.group(1)
                break
        assert target, f"gateway exited with {process.wait()} before listening"
        serving = json.loads(next(line for line in started if "gateway serving" in line))
        assert serving["backlog_refusal"] == "RESOURCE_EXHAUSTED", "the entry point enables core's shedding status"
        yield process, target
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


async def test_sigterm_drains_and_exits_cleanly(gateway_process: tuple[subprocess.Popen[str], str]) -> None:
    process, target = gateway_process
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = feed_pb2_grpc.FeedServiceStub(channel)
        response = await stub.GetFeed(feed_pb2.GetFeedRequest(member_id=42), timeout=5)
        assert len(response.items) == 50

        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        update = await watch.read()
        assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING, "health turns NOT_SERVING on SIGTERM"
    code = await asyncio.to_thread(process.wait, 30)
    assert code == 0
    assert process.stdout is not None
    log = process.stdout.read()
    assert "gateway stopped" in log, log


async def test_feed_command_prints_the_ranked_feed(gateway_process: tuple[subprocess.Popen[str], str]) -> None:
    _, target = gateway_process
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, main, ["feed", "--member", "42", "--count", "20", "--debug", "--target", target]
    )
    assert result.exit_code == 0, result.output
    assert "(20 items)" in result.output
    assert "model feed_ranker → local_onnx/feed_ranker" in result.output
    for step in ("rewrite", "features", "merge", "rank", "blend"):
        assert re.search(rf"│ {step}\s+│ ok", result.output), f"trace row for {step} missing"


async def test_feed_command_reports_errors(gateway_process: tuple[subprocess.Popen[str], str]) -> None:
    _, target = gateway_process
    result = await asyncio.to_thread(CliRunner().invoke, main, ["feed", "--member", "0", "--target", target])
    assert result.exit_code == 1
    assert "INVALID_ARGUMENT: member_id must be a positive integer, got 0" in result.output
