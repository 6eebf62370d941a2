"""`rank` over a declared signature (two-stage and whole-model alike), and `rank.first_pass_order`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from pydantic import ValidationError

from engines.errors import EngineUnavailable
from engines.fake import FakeModels
from kvstore.errors import StoreTimeout
from remix.context import Context
from remix.failures import DependencyFailure
from remix.step import Step
from remix.steps import FEATURES_MISSING, MERGED, RANKED, Candidates, member_rows_key, source_key

from .conftest import DIM, MEMBER_VIEWS, SOURCE, Answers, CountingStore, candidates_of, make_ctx, run_steps

Build = Callable[..., Step]
WEIGHTS = {"click": 1.0, "share": 0.5}


def merged(*items: int) -> Candidates:
    return candidates_of(*items)


async def ranked(build: Build, *items: int, member: int = 1, model: str = "feed_ranker") -> Candidates:
    ctx = await run_steps(make_ctx(member_id=member), build("rewrite"), build("features", views=list(MEMBER_VIEWS)))
    ctx.set(MERGED, merged(*items))
    await build("rank", model=model, weights=WEIGHTS)(ctx)
    return ctx.get(RANKED)


async def test_orders_by_utility_of_the_declared_heads(build: Build) -> None:
    result = await ranked(build, 3, 17, 9, 999)  # 999 has no rows: declared defaults (zeros)
    assert list(result.item_id) == [17, 9, 3, 999]  # click = item id / 100, share = 0.5 for all
    assert result.objectives == ("click", "share")
    np.testing.assert_allclose(result.scores[:, 0], [0.17, 0.09, 0.03, 0.0], atol=1e-6)  # type: ignore[index]
    np.testing.assert_allclose(result.utility, result.scores @ np.array([1.0, 0.5], np.float32))  # type: ignore[operator]


async def test_inputs_are_assembled_in_the_declared_order(build: Build, answers: Answers) -> None:
    seen: list[np.ndarray] = []

    def record(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(inputs["features"])
        return {"scores": np.zeros((len(inputs["features"]), 2), np.float32)}

    answers.ranker = record  # type: ignore[assignment]
    await ranked(build, 4, member=3)
    (x,) = seen
    # member 3 | item 4 | author of 4 (4) | hashtags of 4: [4, 0] pooled | first-pass score | member activity
    expected = [3, 0, 0, 0, 0.04, 0, 0, 0, 0, 4, 0, 0, 0, 0, 3.0, 0, 0.9, 0.3]
    np.testing.assert_allclose(x[0], expected, rtol=1e-6)


async def test_whole_model_mode_is_the_same_step_with_another_signature(build: Build) -> None:
    result = await ranked(build, 3, 17, 9, model="feed_ranker_whole")
    assert list(result.item_id) == [17, 9, 3]


async def test_missing_rows_are_counted_per_view(build: Build) -> None:
    ctx = await run_steps(make_ctx(member_id=1), build("rewrite"), build("features", views=list(MEMBER_VIEWS)))
    ctx.set(MERGED, merged(3, 999))
    await build("rank", model="feed_ranker", weights=WEIGHTS)(ctx)
    # 999 has no item rows; its default author id (0) has no author row; the member's rows were all found
    assert dict(ctx.get(FEATURES_MISSING)) == {"item_meta": 1, "item_embedding": 1, "author_embedding": 1}


async def test_store_errors_and_unresolved_versions_fail_the_step(build: Build, store: CountingStore) -> None:
    ctx = await run_steps(make_ctx(), build("rewrite"), build("features.defaults", views=list(MEMBER_VIEWS)))
    ctx.set(MERGED, merged(3))
    with pytest.raises(DependencyFailure, match="no table version was resolved"):
        await build("rank", model="feed_ranker", weights=WEIGHTS)(ctx)
    ctx = await run_steps(make_ctx(), build("rewrite"), build("features", views=list(MEMBER_VIEWS)))
    ctx.set(MERGED, merged(3))
    store.fail_with(StoreTimeout("slow", store="memory"), table="item")
    with pytest.raises(StoreTimeout):
        await build("rank", model="feed_ranker", weights=WEIGHTS)(ctx)


async def test_a_bad_model_output_is_a_dependency_failure(build: Build, answers: Answers) -> None:
    answers.ranker = lambda inputs: {"scores": np.full((len(inputs["features"]), 2), np.nan, np.float32)}
    with pytest.raises(DependencyFailure, match="non-finite"):
        await ranked(build, 3)


async def test_empty_candidates_rank_to_an_empty_set_without_a_call(build: Build, models: object) -> None:
    assert len(await ranked(build)) == 0
    assert models.calls == []  # type: ignore[attr-defined]


def test_reads_the_member_rows_its_signature_needs(build: Build) -> None:
    step = build("rank", model="feed_ranker", weights=WEIGHTS)
    assert {member_rows_key("member_embedding"), member_rows_key("member_profile"), MERGED} <= step.reads
    assert member_rows_key("member_graph") not in step.reads


def test_weights_must_name_declared_heads(build: Build) -> None:
    with pytest.raises(ValueError, match=r"weights name heads \['comment'\] model 'feed_ranker' does not have"):
        build("rank", model="feed_ranker", weights={"click": 1.0, "comment": 1.0})
    with pytest.raises(ValidationError, match="at least one weight must be non-zero"):
        build("rank", model="feed_ranker", weights={"click": 0.0})


async def test_first_pass_order_fallback(build: Build) -> None:
    ctx = make_ctx()
    ctx.set(MERGED, merged(5, 6, 7))
    await build("rank.first_pass_order")(ctx)
    result = ctx.get(RANKED)
    assert list(result.item_id) == [5, 6, 7]
    assert result.scores is None
    assert result.objectives == ()


async def test_features_carried_from_the_sources_are_reused_not_recomputed(
    build: Build, store: CountingStore, answers: Answers
) -> None:
    seen: list[np.ndarray] = []

    def record(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(inputs["features"])
        return {"scores": np.zeros((len(inputs["features"]), 2), np.float32)}

    answers.ranker = record  # type: ignore[assignment]
    ctx = await run_steps(make_ctx(member_id=3), build("rewrite"), build("features", views=list(MEMBER_VIEWS)))
    source = build("source.kv_list", name="network", list="network_feed.items", limit=6, retrieve=6, **SOURCE)
    await source(ctx)
    found = ctx.get(source_key("network"))
    # the first pass's inputs, and the per-candidate values they were computed from
    assert set(found.features) == {
        "item_log_popularity",
        "author_is_connection",
        "item.id",
        "item_meta.author_id",
        "item_meta.hashtags",
        "item_meta.type",
        "item_stats.popularity",
    }
    # a carried value of a feature the ranker reads is taken as it is: its inputs are not read again
    pooled = np.full((len(found), DIM), 7.0, np.float32)
    ctx.set(MERGED, replace(found, features={**found.features, "hashtags_pooled": pooled}))
    before = len(store.lookups_of("hashtag")), len(store.lookups_of("item_meta"))
    await build("rank", model="feed_ranker", weights=WEIGHTS)(ctx)
    np.testing.assert_array_equal(seen.pop()[:, 3 * DIM : 4 * DIM], pooled)
    # nor is item_meta read again for the authors: the carried author ids key the author rows
    assert (len(store.lookups_of("hashtag")), len(store.lookups_of("item_meta"))) == before


async def test_ranked_candidates_drop_the_carried_features(build: Build) -> None:
    ctx = await run_steps(make_ctx(member_id=3), build("rewrite"), build("features", views=list(MEMBER_VIEWS)))
    ctx.set(MERGED, replace(merged(3, 4), features={"item_log_popularity": np.ones((2, 1), np.float32)}))
    await build("rank", model="feed_ranker", weights=WEIGHTS)(ctx)
    assert ctx.get(RANKED).features == {}


async def rank_context(build: Build) -> Context:
    ctx = await run_steps(make_ctx(member_id=1), build("rewrite"), build("features", views=list(MEMBER_VIEWS)))
    ctx.set(MERGED, merged(3, 4))
    return ctx


async def test_the_route_is_recorded_as_failed_when_the_call_fails_falls_back_or_is_rejected(
    build: Build, answers: Answers, models: FakeModels
) -> None:
    rank = build("rank", model="feed_ranker", weights=WEIGHTS)
    ctx = await rank_context(build)
    await rank(ctx)
    assert ctx.failed_routes == set()  # served as asked

    models.degrade("primary target down; fallback answered", model="feed_ranker")
    ctx = await rank_context(build)
    await rank(ctx)  # an answer, degraded
    assert ctx.failed_routes == {"feed_ranker"}
    models.degrade(None, model="feed_ranker")

    models.fail_with(EngineUnavailable("down", target="t", model="feed_ranker"), model="feed_ranker")
    ctx = await rank_context(build)
    with pytest.raises(EngineUnavailable):
        await rank(ctx)
    assert ctx.failed_routes == {"feed_ranker"}
    models.fail_with(None, model="feed_ranker")

    answers.ranker = lambda inputs: {"scores": np.full((len(inputs["features"]), 2), np.nan, np.float32)}
    ctx = await rank_context(build)
    with pytest.raises(DependencyFailure, match="non-finite"):
        await rank(ctx)
    assert ctx.failed_routes == {"feed_ranker"}


async def test_a_failure_elsewhere_does_not_mark_the_route(build: Build, store: CountingStore) -> None:
    ctx = await rank_context(build)
    store.fail_with(StoreTimeout("slow", store="memory"), table="item")
    with pytest.raises(StoreTimeout):  # the features, not the model
        await build("rank", model="feed_ranker", weights=WEIGHTS)(ctx)
    assert ctx.failed_routes == set()
