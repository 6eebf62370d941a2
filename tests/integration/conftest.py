"""Gateways started in-process on port 0, and a generated-stub client to call them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from gateway.app import FeedApp
from gateway.server import GatewayServer
from gateway.settings import GatewaySettings
from quasar.demo.build import load_manifest
from quasar.v1 import feed_pb2_grpc
from remix import Context, StepParams, StepType
from remix.steps import Services


@dataclass
class Gates:
    """Events a test opens to let stalled steps finish (tests wait on events, never on sleeps)."""

    events: dict[str, asyncio.Event] = field(default_factory=dict)
    entered: dict[str, asyncio.Event] = field(default_factory=dict)

    def gate(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())

    def entered_event(self, name: str) -> asyncio.Event:
        return self.entered.setdefault(name, asyncio.Event())


class StallParams(StepParams):
    gate: str = "default"


class StallStep:
    """Blocks until its gate opens; signals when a request has entered it."""

    reads: frozenset[Any] = frozenset()
    optional_reads: frozenset[Any] = frozenset()
    writes: frozenset[Any] = frozenset()

    def __init__(self, name: str, gate: asyncio.Event, entered: asyncio.Event) -> None:
        self.name = name
        self._gate = gate
        self._entered = entered

    async def __call__(self, ctx: Context) -> None:
        self._entered.set()
        await self._gate.wait()


def stall_step_type(gates: Gates) -> StepType[StallParams]:
    def build(name: str, params: StallParams, services: Services) -> StallStep:
        return StallStep(name, gates.gate(params.gate), gates.entered_event(params.gate))

    return StepType("test.stall", StallParams, build)


def world_workflow(world: Path, name: str = "feed") -> dict[str, Any]:
    """A workflow the world build wrote, as a YAML document to vary."""
    document: dict[str, Any] = yaml.safe_load((world / "workflows" / f"{name}.yaml").read_text())
    return document


def write_test_workflows(directory: Path, world: Path) -> Path:
    """The world's feed workflow plus variants with stalled steps, in a fresh directory."""
    directory.mkdir(parents=True, exist_ok=True)
    feed = world_workflow(world)
    (directory / "feed.yaml").write_text(yaml.safe_dump(feed))

    # an optional source that never answers in time: the answer must come back degraded
    slow_source = yaml.safe_load(yaml.safe_dump(feed))
    slow_source["workflow"] = "feed_slow_source"
    for step in slow_source["steps"]:
        if "parallel" in step:
            step["parallel"]["branches"].append(
                {"type": "test.stall", "name": "stalled_source", "timeout_s": 0.05, "fail_open": True, "gate": "never"}
            )
    (directory / "feed_slow_source.yaml").write_text(yaml.safe_dump(slow_source))

    # a required step that blocks until its gate opens: deadline expiry, draining, admission limits
    stalled = yaml.safe_load(yaml.safe_dump(feed))
    stalled["workflow"] = "feed_stalled"
    stalled["timeout_s"] = 30.0
    stalled["steps"].insert(0, {"type": "test.stall", "name": "hold", "gate": "hold"})
    (directory / "feed_stalled.yaml").write_text(yaml.safe_dump(stalled))

    # the same, but the workflow's own budget (not the caller's deadline) runs out first
    short = yaml.safe_load(yaml.safe_dump(stalled))
    short["workflow"] = "feed_stalled_short_budget"
    short["timeout_s"] = 0.1
    short["steps"][0]["gate"] = "never"
    (directory / "feed_stalled_short_budget.yaml").write_text(yaml.safe_dump(short))
    return directory


@pytest.fixture(scope="session")
def test_workflows(tmp_path_factory: pytest.TempPathFactory, small_world: Path) -> Path:
    return write_test_workflows(tmp_path_factory.mktemp("workflows"), small_world)


def feature_time_s(world: Path) -> float | None:
    """An hour after the world's reference time (what its item ages are measured from), or None."""
    try:
        return float(load_manifest(world).training["reference_time_s"]) + 3600.0
    except (FileNotFoundError, ValueError, KeyError):
        return None


def make_settings(world: Path, workflows: Path | None = None, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": 0,
        "world_dir": world,
        "workflows_dir": workflows,
        "use_uvloop": False,
        "drain_grace_s": 5.0,
        "drain_min_s": 0.0,  # no client here balances away on health: stop as soon as idle
        "reflection": True,  # off by default since issue 13; tests list services through it
        # Ages are computed against this instant, not the wall clock: two requests rank alike however far apart.
        "feature_time_s": feature_time_s(world),
    }
    values.update(overrides)
    return GatewaySettings(**values)


@dataclass
class RunningGateway:
    server: GatewayServer
    channel: grpc.aio.Channel
    stub: feed_pb2_grpc.FeedServiceStub
    gates: Gates

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


async def start_gateway(settings: GatewaySettings, gates: Gates, *, tracing: bool = False) -> RunningGateway:
    app = FeedApp(settings, extra_step_types=[stall_step_type(gates)])
    server = GatewayServer(settings, app, tracing=tracing)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return RunningGateway(server, channel, feed_pb2_grpc.FeedServiceStub(channel), gates)


@pytest.fixture(scope="session")
async def gateway(small_world: Path, test_workflows: Path) -> AsyncIterator[RunningGateway]:
    """One gateway shared by read-only tests: the feed workflow and its stalled variants."""
    gates = Gates()
    running = await start_gateway(make_settings(small_world, test_workflows), gates)
    yield running
    for event in gates.events.values():
        event.set()
    await running.channel.close()
    await running.server.drain_and_stop()
