"""Metrics values after known traffic, OpenTelemetry spans and propagation, the per-request log line."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from gateway.logs import ACCESS_LOGGER
from gateway.tracing import TracingSettings, configure_tracing
from quasar.v1 import feed_pb2
from tests.integration.conftest import Gates, RunningGateway, make_settings, start_gateway


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = configure_tracing(TracingSettings(), exporter=exporter)
    assert provider is not None
    yield exporter
    GrpcAioInstrumentorClient().uninstrument()  # type: ignore[no-untyped-call]
    provider.shutdown()


@pytest.fixture
async def fresh_gateway(small_world: Path, test_workflows: Path) -> AsyncIterator[RunningGateway]:
    """A gateway of its own, so counters start at zero; serves server spans."""
    gw = await start_gateway(make_settings(small_world, test_workflows), Gates(), tracing=True)
    yield gw
    await gw.channel.close()
    await gw.server.drain_and_stop()


def scrape(gw: RunningGateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    url = f"http://127.0.0.1:{gw.server.metrics_port}/metrics"
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    matches = [v for (n, lbl), v in samples.items() if n == name and set(labels.items()) <= lbl]
    assert matches, f"no sample {name} with {labels}"
    return sum(matches)


async def test_scraped_metrics_match_the_traffic(fresh_gateway: RunningGateway, spans: InMemorySpanExporter) -> None:
    for member in (1, 2, 3, 4, 5):
        await fresh_gateway.stub.GetFeed(feed_pb2.GetFeedRequest(member_id=member), timeout=5)
    for bad in (0, -1):
        with pytest.raises(grpc.aio.AioRpcError):
            await fresh_gateway.stub.GetFeed(feed_pb2.GetFeedRequest(member_id=bad), timeout=5)
    await fresh_gateway.stub.GetFeed(feed_pb2.GetFeedRequest(member_id=6, workflow="feed_slow_source"), timeout=5)

    samples = await asyncio.to_thread(scrape, fresh_gateway)
    rpc = {"grpc_service": "quasar.v1.FeedService", "grpc_method": "GetFeed", "grpc_type": "unary"}
    assert value(samples, "grpc_server_started_total", **rpc) == 8
    assert value(samples, "grpc_server_handled_total", grpc_code="OK", **rpc) == 6
    assert value(samples, "grpc_server_handled_total", grpc_code="INVALID_ARGUMENT", **rpc) == 2
    assert value(samples, "grpc_server_handling_seconds_count", **rpc) == 8
    assert value(samples, "grpc_server_handling_seconds_bucket", le="2.5", **rpc) == 8
    assert value(samples, "quasar_workflow_requests_total", workflow="feed", outcome="ok") == 5
    assert value(samples, "quasar_workflow_requests_total", workflow="feed_slow_source", outcome="degraded") == 1
    assert value(samples, "quasar_workflow_requests_total", workflow="feed", outcome="INVALID_ARGUMENT") == 2
    assert value(samples, "quasar_step_seconds_count", workflow="feed", step="rank", outcome="ok") == 5
    assert value(samples, "quasar_degraded_total", workflow="feed_slow_source", step="stalled_source") == 1


async def test_request_and_step_spans_continue_the_callers_trace(
    fresh_gateway: RunningGateway, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    spans.clear()
    frontend = trace.get_tracer("frontend")
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER), frontend.start_as_current_span("render feed") as root:
        # the instrumented client channel injects the W3C traceparent of this span into the call's metadata
        await fresh_gateway.stub.GetFeed(feed_pb2.GetFeedRequest(member_id=42, request_id="traced-1"), timeout=5)
        trace_id = format(root.get_span_context().trace_id, "032x")
    finished = [s for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
    by_name: dict[str, Any] = {}
    for span in finished:
        by_name.setdefault(span.name, []).append(span)
    (server,) = [s for s in by_name["/quasar.v1.FeedService/GetFeed"] if s.kind is SpanKind.SERVER]
    ids = {s.context.span_id: s for s in finished}
    chain = []
    node = server
    while node.parent is not None and node.parent.span_id in ids:
        node = ids[node.parent.span_id]
        chain.append(node.name)
    assert chain[-1] == "render feed", f"the server span continues the caller's trace: {chain}"
    for name in ("step rewrite", "step features", "step sources", "step network", "step rank", "step blend"):
        assert name in by_name, sorted(by_name)
    (ranker,) = by_name["model feed_ranker"]
    assert ranker.attributes is not None
    assert ranker.attributes["quasar.target"] == "local_onnx/feed_ranker"
    # every step and model span of the request descends from the server span
    for span in finished:
        if not span.name.startswith(("step ", "model ")):
            continue
        node = span
        while node is not server and node.parent is not None and node.parent.span_id in ids:
            node = ids[node.parent.span_id]
        assert node is server, f"{span.name} does not descend from the request span"

    lines = [r for r in caplog.records if getattr(r, "request_id", None) == "traced-1"]
    assert len(lines) == 1, "exactly one log line per request"
    line: Any = lines[0]
    assert (line.workflow, line.outcome, line.trace_id) == ("feed", "ok", trace_id)
    assert line.latency_ms > 0


async def test_trace_context_reaches_grpc_backends(spans: InMemorySpanExporter) -> None:
    """Channels opened after tracing is configured (as engines open theirs at start) carry traceparent."""
    seen: list[str] = []

    class Capture(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
        async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
            seen.extend(v for k, v in details.invocation_metadata or () if k == "traceparent")  # type: ignore[misc]
            return await continuation(details)

    backend = grpc.aio.server(interceptors=[Capture()])
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, backend)
    port = backend.add_insecure_port("127.0.0.1:0")
    await backend.start()
    try:
        tracer = trace.get_tracer("test")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with tracer.start_as_current_span("backend call") as span:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                expected = format(span.get_span_context().trace_id, "032x")
        assert seen, "no traceparent reached the backend"
        assert seen[0].split("-")[1] == expected
    finally:
        await backend.stop(None)
