"""Two products, one gateway: the demo feed and "jobs you may be interested in", each only data and
declarations, ranked through GetFeed; the jobs product's remote candidate service is a real gRPC server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from kvstore.embedded import EmbeddedStore
from quasar.candidate_server import CandidateServer, StoreCandidateLists, serve
from quasar.demo import jobs_product
from quasar.v1 import feed_pb2
from remix.request import FeedRequest
from tests.integration.conftest import Gates, RunningGateway, make_settings, start_gateway


def _world_with_service(small_world: Path, tmp_path: Path, target: str) -> Path:
    """The small world by symlinks, its jobs engines pointing at `target`."""
    world = tmp_path / "world"
    world.mkdir()
    for entry in small_world.iterdir():
        if entry.name != "engines":
            (world / entry.name).symlink_to(entry)
    (world / "engines").mkdir()
    (world / "engines" / "feed.yaml").symlink_to(small_world / "engines" / "feed.yaml")
    (world / "engines" / "jobs.yaml").write_text(yaml.safe_dump(jobs_product.engines_document(target)))
    return world


@pytest.fixture
async def candidate_service(small_world: Path) -> AsyncIterator[CandidateServer]:
    store = EmbeddedStore(small_world / "store")
    await store.start()
    server = await serve(
        StoreCandidateLists(store, default_table="jobs_network_lists"), host="127.0.0.1", port=0, max_limit=1000
    )
    try:
        yield server
    finally:
        await server.stop(0)
        await store.close()


@pytest.fixture
async def gateway_with_products(
    small_world: Path, tmp_path: Path, candidate_service: CandidateServer
) -> AsyncIterator[RunningGateway]:
    world = _world_with_service(small_world, tmp_path, f"127.0.0.1:{candidate_service.port}")
    running = await start_gateway(make_settings(world), Gates())
    try:
        yield running
    finally:
        await running.channel.close()
        await running.server.drain_and_stop()


async def _get(running: RunningGateway, workflow: str, member: int = 42) -> feed_pb2.GetFeedResponse:
    request = feed_pb2.GetFeedRequest(request_id=f"{workflow}-{member}", member_id=member, count=20, workflow=workflow)
    return await running.stub.GetFeed(request, timeout=10.0)


async def test_one_gateway_ranks_both_products(gateway_with_products: RunningGateway) -> None:
    feed = await _get(gateway_with_products, "feed")
    jobs = await _get(gateway_with_products, "jobs")
    assert (feed.workflow, jobs.workflow) == ("feed", "jobs")
    assert not feed.degraded, feed.degraded_reasons
    assert not jobs.degraded, jobs.degraded_reasons
    assert len(feed.items) == 20
    assert len(jobs.items) == 20
    assert {s for item in feed.items for s in item.sources} >= {"network", "trending"}
    assert {s for item in jobs.items for s in item.sources} == {"network_jobs", "similar"}
    assert all(item.item_type == feed_pb2.ITEM_TYPE_JOB for item in jobs.items)
    assert [s.objective for s in jobs.items[0].objective_scores] == ["apply", "save"]
    assert [s.objective for s in feed.items[0].objective_scores] == ["click", "comment", "share", "long_dwell"]
    companies = [item.author_id for item in jobs.items]
    assert max(companies.count(c) for c in set(companies)) <= 3  # the jobs blend caps three per company
    models = {m.model for m in jobs.model_versions}
    assert models == {"jobs_first_pass", "jobs_ranker"}


async def test_the_remote_candidate_service_down_fails_open_degraded(
    small_world: Path, tmp_path: Path, candidate_service: CandidateServer
) -> None:
    port = candidate_service.port
    await candidate_service.stop(0)
    world = _world_with_service(small_world, tmp_path, f"127.0.0.1:{port}")
    running = await start_gateway(make_settings(world), Gates())
    try:
        jobs = await _get(running, "jobs")
        assert jobs.degraded
        assert "network_jobs: dependency" in jobs.degraded_reasons
        assert len(jobs.items) == 20
        assert {s for item in jobs.items for s in item.sources} == {"similar"}
    finally:
        await running.channel.close()
        await running.server.drain_and_stop()


async def test_each_product_pins_only_the_tables_its_own_workflow_reads(gateway_with_products: RunningGateway) -> None:
    app = gateway_with_products.server.app
    tables = {}
    for workflow in ("feed", "jobs"):
        answer = await app.get_feed(
            FeedRequest(request_id=f"tables-{workflow}", member_id=42, count=20, workflow=workflow), timeout_s=10.0
        )
        tables[workflow] = set(answer.context.table_versions)
    assert tables["feed"]
    assert tables["jobs"]
    assert not any(table.startswith("jobs_") for table in tables["feed"])  # a jobs table cannot fail the feed
    assert all(table.startswith("jobs_") for table in tables["jobs"])
