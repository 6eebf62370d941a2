"""The source kinds: what each retrieves, then the shared first pass over declared features."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from engines.errors import EngineUnavailable
from engines.fake import FakeModels
from kvstore.ann import build_index
from kvstore.errors import TableNotFound
from remix.context import Context
from remix.failures import DependencyFailure
from remix.step import Step
from remix.steps import member_rows_key, source_key
from remix.steps.services import Services
from remix.steps.sources.ann import AnnRetriever
from remix.steps.sources.static import StaticList

from .conftest import MEMBER_VIEWS, NETWORK, SOURCE, TRENDING, WALL_S, CountingStore, FakeRemote, make_ctx, run_steps

Build = Callable[..., Step]


def features(build: Build) -> Step:
    return build("features", views=list(MEMBER_VIEWS))


async def test_kv_list_scores_the_members_list_and_keeps_the_best(build: Build) -> None:
    source = build("source.kv_list", name="network", list="network_feed.items", limit=3, retrieve=6, **SOURCE)
    ctx = await run_steps(make_ctx(member_id=1), build("rewrite"), features(build), source)
    found = ctx.get(source_key("network"))
    # member 1 follows 2 and 3: items 2 and 7 are by author 2; repeats (2) are dropped
    assert set(found.item_id) <= set(NETWORK[1])
    assert len(found) == 3
    assert list(found.item_id[:2]) == sorted([2, 7], key=lambda i: -np.log1p((i * 13) % 17))
    assert list(found.author_id) == [(int(i) - 1) % 5 + 1 for i in found.item_id]
    assert list(found.item_type) == [(3, 1, 2)[int(i) % 3] for i in found.item_id]
    assert (np.diff(found.first_pass_score) <= 0).all()


async def test_kv_list_of_an_empty_list_calls_no_model(build: Build, models: object) -> None:
    source = build("source.kv_list", name="network", list="network_feed.items", **SOURCE)
    ctx = await run_steps(make_ctx(member_id=4), build("rewrite"), features(build), source)
    assert len(ctx.get(source_key("network"))) == 0
    assert models.calls == []  # type: ignore[attr-defined]


async def test_kv_list_older_than_its_views_max_age_is_a_dependency_failure(build: Build, store: CountingStore) -> None:
    from datetime import UTC, datetime

    source = build("source.kv_list", name="network", list="network_feed.items", **SOURCE)
    ids, rows = np.array([1]), np.array([[2, 7, -1, -1, -1, -1]], np.int64)
    fresh = datetime.fromtimestamp(WALL_S - 3000, UTC).isoformat()  # max_age_s is 3600
    store.put("network_feed", ids, rows, dtype="int64", version="fresh", created_at=fresh)
    ctx = await run_steps(make_ctx(member_id=1), build("rewrite"), features(build), source)
    assert sorted(ctx.get(source_key("network")).item_id) == [2, 7]

    stale = datetime.fromtimestamp(WALL_S - 7200, UTC).isoformat()
    store.put("network_feed", ids, rows, dtype="int64", version="stale", created_at=stale)
    ctx = await run_steps(make_ctx(member_id=1), build("rewrite"), features(build))
    with pytest.raises(DependencyFailure, match=r"network_feed@stale is 2.0 h old, over the view's max_age_s 3600"):
        await source(ctx)


def test_kv_list_reads_its_views_member_row(build: Build) -> None:
    source = build("source.kv_list", name="network", list="network_feed.items", **SOURCE)
    assert member_rows_key("network_feed") in source.reads


def test_kv_list_refuses_a_list_that_is_not_a_members_id_list(build: Build) -> None:
    with pytest.raises(ValueError, match="must be a stored id-list feature"):
        build("source.kv_list", name="x", list="member_profile.activity", **SOURCE)
    with pytest.raises(ValueError, match="keyed by the request"):
        build("source.kv_list", name="x", list="item_meta.hashtags", **SOURCE)
    with pytest.raises(ValueError, match=r"unknown feature 'network_feed.itmes' \(nearest: network_feed.items"):
        build("source.kv_list", name="x", list="network_feed.itmes", **SOURCE)


async def test_static_list_is_read_at_start_not_per_request(
    build: Build, services: Services, store: CountingStore
) -> None:
    source = build("source.static", name="trending", list="trending.items", limit=5, retrieve=5, **SOURCE)
    await services.resources.start()
    try:
        reads_after_start = len(store.lookups_of("trending"))
        assert reads_after_start == 1
        for member in (1, 2):
            ctx = await run_steps(make_ctx(member_id=member), build("rewrite"), features(build), source)
            assert sorted(ctx.get(source_key("trending")).item_id) == sorted(TRENDING)
        assert len(store.lookups_of("trending")) == reads_after_start
    finally:
        await services.resources.close()


async def test_static_list_refresh_picks_a_new_version(services: Services, store: CountingStore) -> None:
    from remix.steps.sources.static import StaticParams

    static = StaticList("trending", StaticParams(list="trending.items", model="first_pass"), services)
    await static.refresh()
    assert list(static.ids) == TRENDING
    store.put("trending", np.array([0]), np.array([[1, 2, 1, -1, -1]], np.int64), dtype="int64", version="v2")
    await static.refresh()
    assert (static.version, list(static.ids)) == ("v2", [1, 2])  # padding and repeats dropped at refresh


async def test_grpc_source_asks_the_remote_service_with_the_remaining_budget(build: Build, remote: FakeRemote) -> None:
    source = build("source.grpc", name="pymk", service="remote", limit=2, retrieve=4, **SOURCE)
    ctx = await run_steps(make_ctx(member_id=1, budget_s=0.25), build("rewrite"), features(build), source)
    assert remote.calls == [{"member_id": 1, "limit": 4, "source": "pymk", "timeout_s": 0.25}]
    assert sorted(ctx.get(source_key("pymk")).item_id) == [5, 7]  # best two of 5, 6, 7 by first pass


def test_grpc_source_names_an_unknown_service(build: Build) -> None:
    with pytest.raises(ValueError, match=r"no candidate service 'remot' is configured \(nearest: remote"):
        build("source.grpc", name="pymk", service="remot", **SOURCE)


async def test_ann_source_finds_the_nearest_jobs_at_the_pinned_version(
    build: Build, services: Services, store: CountingStore
) -> None:
    source = build(
        "source.ann", name="jobs", query="member_topics.vector", table="job_topics", limit=3, retrieve=4, **SOURCE
    )
    versions = await store.current_versions(["job_topics"])
    jobs = np.array([i for i in range(3, 31, 3)], np.int64)
    vectors = np.array([[j % 2, 1 - j % 2] for j in jobs], np.float32)
    retriever = source._retriever  # type: ignore[attr-defined]
    assert isinstance(retriever, AnnRetriever)
    retriever.searcher.add("job_topics", versions["job_topics"], build_index(jobs, vectors, metric="ip"))
    try:
        ctx = await run_steps(make_ctx(member_id=1), build("rewrite"), features(build), source)
        found = ctx.get(source_key("jobs"))
        # member 1's topics are [1, 0]: the odd jobs
        assert len(found) == 3
        assert all(int(i) % 2 == 1 and int(i) % 3 == 0 for i in found.item_id)
    finally:
        await retriever.searcher.close()


async def test_ann_source_without_an_index_for_the_version_fails(build: Build) -> None:
    source = build("source.ann", name="jobs", query="member_topics.vector", table="job_topics", **SOURCE)
    with pytest.raises(TableNotFound, match="job_topics"):
        await run_steps(make_ctx(member_id=1), build("rewrite"), features(build), source)


async def test_a_first_pass_without_a_declared_signature_fails_at_build(build: Build) -> None:
    with pytest.raises(ValueError, match=r"model 'first_pas' has no declared signature .*nearest: first_pass"):
        build("source.kv_list", name="x", list="network_feed.items", model="first_pas")


async def test_an_unresolved_table_version_is_a_dependency_failure(build: Build) -> None:
    source = build("source.kv_list", name="network", list="network_feed.items", **SOURCE)
    ctx = await run_steps(make_ctx(member_id=1), build("rewrite"), build("features.defaults", views=list(MEMBER_VIEWS)))
    ctx.get(member_rows_key("network_feed"))[0, :2] = [1, 2]  # a list without the store behind it
    with pytest.raises(DependencyFailure, match="no table version was resolved"):
        await source(ctx)


async def test_ann_source_without_a_pinned_version_is_a_dependency_failure(build: Build) -> None:
    source = build("source.ann", name="jobs", query="member_topics.vector", table="job_topics", **SOURCE)
    ctx = await run_steps(make_ctx(member_id=1), build("rewrite"), build("features.defaults", views=list(MEMBER_VIEWS)))
    with pytest.raises(DependencyFailure, match=r"no table version was resolved for \['job_topics'\]"):
        await source(ctx)


async def test_a_source_may_answer_unscored_when_its_first_pass_cannot_run(
    build: Build, services: Services, store: CountingStore
) -> None:
    source = build(
        "source.static",
        name="trending",
        list="trending.items",
        limit=3,
        retrieve=5,
        on_scoring_failure="unscored",
        **SOURCE,
    )
    strict = build("source.static", name="strict", list="trending.items", limit=3, retrieve=5, **SOURCE)
    await services.resources.start()
    try:
        ctx = await run_steps(
            make_ctx(member_id=1), build("rewrite"), build("features.defaults", views=list(MEMBER_VIEWS))
        )
        await source(ctx)
        found = ctx.get(source_key("trending"))
        assert list(found.item_id) == TRENDING[:3]  # retrieval order
        assert list(found.first_pass_score) == [1.0, 0.5, 0.0]
        assert list(found.author_id) == [0, 0, 0]
        assert [f.step for f in ctx.failures] == ["trending"]
        with pytest.raises(DependencyFailure):
            await strict(ctx)
    finally:
        await services.resources.close()


async def test_an_ann_source_without_an_index_for_the_current_version_fails_at_start(
    build: Build, services: Services
) -> None:
    build("source.ann", name="jobs", query="member_topics.vector", table="job_topics", **SOURCE)
    with pytest.raises(
        TableNotFound, match=r"step 'jobs': no ANN index for job_topics@v1 \(build it with `quasar index build"
    ):
        await services.resources.start()


# -- first-pass scoring shared by a request's sources (remix/steps/coalesce.py) --------------------------------


async def _sources_side_by_side(ctx: Context, *sources: Step) -> None:
    await asyncio.gather(*(source(ctx) for source in sources))


async def test_sources_scoring_in_the_same_turn_share_one_model_call_and_get_what_they_get_alone(
    build: Build, services: Services, models: FakeModels
) -> None:
    network = build("source.kv_list", name="network", list="network_feed.items", limit=3, retrieve=6, **SOURCE)
    trending = build("source.static", name="trending", list="trending.items", limit=2, retrieve=5, **SOURCE)
    await services.resources.start()
    try:
        alone = {}
        for source in (network, trending):
            ctx = await run_steps(make_ctx(member_id=1), build("rewrite"), features(build), source)
            alone[source.name] = ctx.get(source_key(source.name))
        rows_alone = [len(call.inputs["features"]) for call in models.calls]
        models.calls.clear()

        ctx = await run_steps(make_ctx(member_id=1), build("rewrite"), features(build))
        await _sources_side_by_side(ctx, network, trending)
    finally:
        await services.resources.close()
    assert [call.model for call in models.calls] == ["first_pass"]  # one call for both
    assert len(rows_alone) == 2
    assert len(models.calls[0].inputs["features"]) == sum(rows_alone)
    for name, expected in alone.items():
        together = ctx.get(source_key(name))
        np.testing.assert_array_equal(together.item_id, expected.item_id)
        np.testing.assert_array_equal(together.first_pass_score, expected.first_pass_score)
        np.testing.assert_array_equal(together.author_id, expected.author_id)
        assert together.features.keys() == expected.features.keys()
        for feature, value in expected.features.items():
            np.testing.assert_array_equal(together.features[feature], value)
    assert ctx.notes == {"network": "first pass scored with trending in one call", "trending": ctx.notes["trending"]}
    assert ctx.notes["trending"] == "first pass scored with network in one call"
    assert [use.model for use in ctx.models] == ["first_pass"]


async def test_a_failed_shared_first_pass_fails_every_source_in_it_each_by_its_own_policy(
    build: Build, services: Services, models: FakeModels
) -> None:
    strict = build("source.kv_list", name="network", list="network_feed.items", **SOURCE)
    lenient = build(
        "source.static", name="trending", list="trending.items", limit=3, on_scoring_failure="unscored", **SOURCE
    )
    await services.resources.start()
    try:
        ctx = await run_steps(make_ctx(member_id=1), build("rewrite"), features(build))
        models.fail_with(EngineUnavailable("down", target="fake", model="first_pass"))
        outcomes = await asyncio.gather(strict(ctx), lenient(ctx), return_exceptions=True)
    finally:
        await services.resources.close()
    assert isinstance(outcomes[0], EngineUnavailable)
    assert outcomes[1] is None
    assert list(ctx.get(source_key("trending")).item_id) == TRENDING[:3]  # unscored: retrieval order
    assert len(models.calls) == 1


async def test_a_source_leaving_a_shared_first_pass_does_not_cut_the_others(
    build: Build, services: Services, models: FakeModels
) -> None:
    network = build("source.kv_list", name="network", list="network_feed.items", limit=3, retrieve=6, **SOURCE)
    trending = build("source.static", name="trending", list="trending.items", limit=2, retrieve=5, **SOURCE)
    release = asyncio.Event()
    models.block_until(release, model="first_pass")
    await services.resources.start()
    try:
        ctx = await run_steps(make_ctx(member_id=1), build("rewrite"), features(build))
        leaving = asyncio.ensure_future(network(ctx))
        staying = asyncio.ensure_future(trending(ctx))
        await models.entered.wait()  # the shared call is running
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        release.set()
        await staying
    finally:
        await services.resources.close()
    assert len(ctx.get(source_key("trending"))) == 2
    assert not ctx.has(source_key("network"))
    assert len(models.calls) == 1


async def test_a_shared_first_pass_nobody_waits_for_is_cancelled(
    build: Build, services: Services, models: FakeModels
) -> None:
    network = build("source.kv_list", name="network", list="network_feed.items", **SOURCE)
    models.block_until(asyncio.Event(), model="first_pass")  # never released
    ctx = await run_steps(make_ctx(member_id=1), build("rewrite"), features(build))
    waiting = asyncio.ensure_future(network(ctx))
    await models.entered.wait()
    batch_tasks = [t for t in asyncio.all_tasks() if "CoalescedScorer._run" in repr(t.get_coro())]
    assert len(batch_tasks) == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(asyncio.CancelledError):
        await batch_tasks[0]
