"""GetFeed end to end through the generated client against a gateway on embedded defaults."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from quasar.v1 import feed_pb2
from tests.integration.conftest import Gates, RunningGateway, make_settings, start_gateway


async def get_feed(gw: RunningGateway, timeout_s: float = 5.0, **fields: object) -> feed_pb2.GetFeedResponse:
    return await gw.stub.GetFeed(feed_pb2.GetFeedRequest(**fields), timeout=timeout_s)  # type: ignore[arg-type]


async def expect_status(gw: RunningGateway, code: grpc.StatusCode, timeout_s: float = 5.0, **fields: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get_feed(gw, timeout_s=timeout_s, **fields)
    assert caught.value.code() is code, caught.value.details()
    return caught.value.details() or ""


async def test_default_feed_has_50_items_from_three_sources(gateway: RunningGateway) -> None:
    response = await get_feed(gateway, member_id=42)
    assert len(response.items) == 50
    assert len({item.source for item in response.items}) >= 3
    scores = np.array([item.score for item in response.items])
    assert np.all(np.diff(scores) <= 1e-6), "items must be ordered by final score"
    assert len({item.item_id for item in response.items}) == 50, "no duplicate items"
    assert not response.degraded, response.degraded_reasons
    assert response.workflow == "feed"
    assert response.workflow_version
    objectives = [s.objective for s in response.items[0].objective_scores]
    assert objectives == ["click", "comment", "share", "long_dwell"]
    assert {m.model for m in response.model_versions} >= {"feed_ranker"}
    assert not response.trace, "trace only with debug"


async def test_blend_caps_items_per_author(gateway: RunningGateway) -> None:
    response = await get_feed(gateway, member_id=7, count=100)
    _, per_author = np.unique([item.author_id for item in response.items], return_counts=True)
    assert per_author.max() <= 2


async def test_count_and_debug_trace(gateway: RunningGateway) -> None:
    response = await get_feed(gateway, member_id=42, count=20, debug=True, request_id="req-abc")
    assert len(response.items) == 20
    assert response.request_id == "req-abc"
    names = [entry.name for entry in response.trace]
    for step in ("rewrite", "features", "merge", "rank", "blend"):
        assert step in names
    assert all(entry.outcome == "ok" for entry in response.trace)
    assert all(entry.elapsed_ms >= 0 for entry in response.trace)


async def test_same_member_same_feed(gateway: RunningGateway) -> None:
    first = await get_feed(gateway, member_id=99)
    second = await get_feed(gateway, member_id=99)
    assert [i.item_id for i in first.items] == [i.item_id for i in second.items]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"member_id": 0}, "member_id must be a positive integer, got 0"),
        ({"member_id": -5}, "member_id must be a positive integer, got -5"),
        ({"member_id": 1, "count": 501}, "count must be between 1 and 500, got 501"),
        ({"member_id": 1, "count": -1}, "count must be between 1 and 500, got -1"),
        ({"member_id": 1, "workflow": "nope"}, "unknown workflow 'nope'"),
        ({"member_id": 1, "context": {f"k{i}": "v" for i in range(17)}}, "context has 17 entries, at most 16"),
        ({"member_id": 1, "context": {"surface": "x" * 3000}}, "at most 2048 are allowed"),
    ],
)
async def test_invalid_requests_are_rejected_precisely(
    gateway: RunningGateway, fields: dict[str, object], expected: str
) -> None:
    details = await expect_status(gateway, grpc.StatusCode.INVALID_ARGUMENT, **fields)
    assert expected in details


async def test_server_survives_invalid_requests(gateway: RunningGateway) -> None:
    await expect_status(gateway, grpc.StatusCode.INVALID_ARGUMENT, member_id=0)
    assert len((await get_feed(gateway, member_id=3)).items) == 50


async def test_optional_source_timeout_gives_degraded_answer(gateway: RunningGateway) -> None:
    response = await get_feed(gateway, member_id=42, workflow="feed_slow_source", debug=True)
    assert response.degraded
    assert any("stalled_source" in reason for reason in response.degraded_reasons)
    assert len(response.items) == 50, "the other sources still fill the feed"
    stalled = [entry for entry in response.trace if entry.name == "stalled_source"]
    assert stalled
    assert stalled[0].outcome == "timed_out"


async def test_deadline_that_cannot_be_met(gateway: RunningGateway) -> None:
    details = await expect_status(
        gateway, grpc.StatusCode.DEADLINE_EXCEEDED, timeout_s=0.2, member_id=42, workflow="feed_stalled"
    )
    assert details  # either the gateway's message or the client's own deadline; never a hang
    assert len((await get_feed(gateway, member_id=42)).items) == 50, "the gateway is fine afterwards"


async def test_required_step_out_of_budget_is_deadline_exceeded(gateway: RunningGateway) -> None:
    details = await expect_status(
        gateway, grpc.StatusCode.DEADLINE_EXCEEDED, timeout_s=10, member_id=42, workflow="feed_stalled_short_budget"
    )
    assert details.startswith("deadline cannot be met: hold"), details


async def test_health_and_reflection(gateway: RunningGateway) -> None:
    health = health_pb2_grpc.HealthStub(gateway.channel)
    for service in ("", "quasar.v1.FeedService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    responses = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    answer = await responses.read()  # not `async for ... break`: an empty stream must fail, not pass
    assert answer is not grpc.aio.EOF, "reflection answered nothing"
    names = {s.name for s in answer.list_services_response.service}
    assert {"quasar.v1.FeedService", "grpc.health.v1.Health"} <= names
    responses.cancel()


async def test_metrics_endpoint_counts_calls(gateway: RunningGateway) -> None:
    await get_feed(gateway, member_id=5)
    await expect_status(gateway, grpc.StatusCode.INVALID_ARGUMENT, member_id=0)
    url = f"http://127.0.0.1:{gateway.server.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="GetFeed"' in body
    assert 'grpc_code="INVALID_ARGUMENT",grpc_method="GetFeed"' in body
    assert "grpc_server_handling_seconds_bucket" in body
    assert 'quasar_step_seconds_count{outcome="ok",step="rank",workflow="feed"}' in body


async def test_admission_limit_and_draining(small_world, test_workflows) -> None:  # type: ignore[no-untyped-def]
    gates = Gates()
    gw = await start_gateway(make_settings(small_world, test_workflows, max_in_flight=1), gates)
    try:
        held = asyncio.create_task(get_feed(gw, timeout_s=30, member_id=42, workflow="feed_stalled"))
        await gates.entered_event("hold").wait()
        details = await expect_status(gw, grpc.StatusCode.RESOURCE_EXHAUSTED, member_id=42)
        assert "limit of 1 requests in flight" in details

        draining = asyncio.create_task(gw.server.drain_and_stop())
        await gw.server.admission.wait_draining()
        reply = await gw.server.health.Check(health_pb2.HealthCheckRequest(service=""), None)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await expect_status(gw, grpc.StatusCode.UNAVAILABLE, member_id=42)
        assert not draining.done(), "drain must wait for the in-flight call"
        gates.gate("hold").set()
        response = await held
        assert len(response.items) == 50, "the in-flight call completes during the drain"
        await draining
    finally:
        gates.gate("hold").set()
        await gw.channel.close()
