"""Two-stage ranking from Redis against the whole model, and the version pins of the model's manifest.

Both run the real feed workflow in process (`FeedApp`, no gRPC) on the small demo world, its tables pushed
to a real redis-server at the versions its manifest pins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from gateway.app import FeedApp
from kvstore.config import RedisStoreConfig
from kvstore.loader import push
from kvstore.pinning import VersionPolicy
from kvstore.redis import RedisStore
from quasar.demo.build import load_manifest
from remix.request import FeedRequest
from remix.steps import RANKED
from tests.integration.conftest import make_settings
from tests.integration.redis.servers import RedisServer
from tests.integration.redis.worlds import push_world, relaxed_feed

MEMBERS = (1, 42, 77, 500, 799, 10_000)  # 10,000 is beyond the corpus: a cold start, missing everywhere


def parity_workflows(directory: Path, world: Path) -> Path:
    """`two_stage` (rank from the store) and `whole` (the whole model), no fallbacks: a failure fails the test."""
    steps = yaml.safe_load((world / "workflows" / "feed.yaml").read_text())["steps"]
    rank = next(step for step in steps if step.get("type") == "rank")
    whole = {**rank["fallback"], "name": "rank"}
    whole.pop("fallback")
    return relaxed_feed(
        directory,
        world,
        two_stage={"features": None, "rank": None},
        whole={"features": None, "rank": whole},
    )


async def start_app(world: Path, url: str, prefix: str, mode: str, workflows: Path) -> FeedApp:
    store = RedisStoreConfig(url=url, prefix=prefix, timeout_s=1.0, version_policy=VersionPolicy(mode=mode))  # type: ignore[arg-type]
    app = FeedApp(make_settings(world, workflows, store=store))
    await app.start()
    return app


@pytest.fixture
async def pushed(small_world: Path, redis_server: RedisServer, prefix: str) -> dict[str, str]:
    return await push_world(small_world, redis_server.url, prefix)


async def test_whole_model_and_two_stage_give_the_same_scores(
    small_world: Path, redis_server: RedisServer, prefix: str, pushed: dict[str, str], tmp_path: Path
) -> None:
    assert pushed == {table: entry.version for table, entry in load_manifest(small_world).tables.items()}
    app = await start_app(
        small_world, redis_server.url, prefix, "refuse", parity_workflows(tmp_path / "wf", small_world)
    )
    try:
        worst = 0.0
        for member in MEMBERS:
            answers = {}
            for workflow in ("two_stage", "whole"):
                answer = await app.get_feed(FeedRequest(f"r{member}", member, 50, workflow=workflow), timeout_s=5.0)
                assert not answer.context.degraded, answer.context.failures
                model = "feed_ranker" if workflow == "two_stage" else "feed_ranker_whole"
                assert model in {use.model for use in answer.context.models}
                answers[workflow] = answer.context.get(RANKED)
            two_stage, whole = answers["two_stage"], answers["whole"]
            assert len(two_stage) >= 100
            order = np.argsort(two_stage.item_id)
            other = np.argsort(whole.item_id)
            np.testing.assert_array_equal(two_stage.item_id[order], whole.item_id[other])  # the same candidates
            assert two_stage.scores is not None
            assert whole.scores is not None
            diff = float(np.abs(two_stage.scores[order] - whole.scores[other]).max())
            assert diff <= 1e-5, (member, diff)
            worst = max(worst, diff)
        print(f"whole model vs two-stage: max |score diff| {worst:.2e} over {len(MEMBERS)} members")
    finally:
        await app.close()


async def switch_item_table(url: str, prefix: str) -> str:
    """A retrained item table the model has never seen, made current."""
    writer = RedisStore(url, prefix=prefix, timeout_s=5.0)
    await writer.start()
    try:
        ids = np.arange(1, 8001, dtype=np.int64)
        vectors = np.random.default_rng(3).normal(size=(len(ids), 16)).astype(np.float32)
        return (await push(writer, "item", ids, vectors, version="retrained")).version
    finally:
        await writer.close()


@pytest.mark.parametrize("mode", ["refuse", "alert"])
async def test_serving_other_table_versions_is_refused_or_alerted(
    small_world: Path, redis_server: RedisServer, prefix: str, pushed: dict[str, str], mode: str, tmp_path: Path
) -> None:
    app = await start_app(small_world, redis_server.url, prefix, mode, relaxed_feed(tmp_path / "wf", small_world))
    registry = app.metrics.registry
    try:
        pinned = await app.get_feed(FeedRequest("a", 42, 20), timeout_s=5.0)
        assert not pinned.context.degraded
        assert await switch_item_table(redis_server.url, prefix) == "retrained"
        answer = await app.get_feed(FeedRequest("b", 42, 20), timeout_s=5.0)
        ctx = answer.context
        assert ctx.table_versions["item"] == "retrained"
        mismatches = registry.get_sample_value("quasar_kvstore_version_mismatch_total", {"table": "item", "mode": mode})
        assert mismatches == 1
        if mode == "refuse":  # rank fails on the refused lookup and the whole model (its own tables) serves
            assert [f.reason for f in ctx.failures] == ["rank: dependency"]
            assert "not the model's" in ctx.failures[0].message
            assert ctx.trace.by_name("rank_whole_model").outcome.value == "ok"
        else:  # served from the retrained table, counted and logged
            assert not ctx.degraded
            assert ctx.trace.by_name("rank").outcome.value == "ok"
        assert len(answer.feed) == 20
    finally:
        await app.close()
