from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import pytest
from pydantic import ValidationError

from engines.fake import FakeModels
from remix.candidates import Candidates, ItemType
from remix.context import Context, ModelUse
from remix.corpus import Corpus
from remix.failures import Category, DependencyFailure
from remix.feature_spec import FIRST_PASS_FEATURES, FIRST_PASS_INPUT, first_pass_features
from remix.step import Step
from remix.steps import source_key
from remix.steps.sources import NetworkParams

from .conftest import (
    CONNECTIONS,
    FOLLOWS,
    N_ITEMS,
    Answers,
    age_of,
    author_of,
    first_pass_answer,
    hashtags_of,
    item_type_of,
    make_ctx,
    run_steps,
)

Build = Callable[..., Step]
ITEMS = range(1, N_ITEMS + 1)
POST, ARTICLE, JOB = ItemType.POST, ItemType.ARTICLE, ItemType.JOB


def reference_scores(corpus: Corpus, member: int, items: list[int]) -> dict[int, float]:
    x = first_pass_features(corpus, member, np.array(items, dtype=np.int64))
    scores = first_pass_answer({FIRST_PASS_INPUT: x})["score"]
    return dict(zip(items, scores.tolist(), strict=True))


async def run_source(build: Build, type_name: str, member: int = 1, **params: object) -> tuple[Context, Candidates]:
    step = build(type_name, "src", **params)
    ctx = await run_steps(make_ctx(member_id=member, budget_s=0.3), build("rewrite"), step)
    return ctx, ctx.get(source_key("src"))


def assert_well_formed(c: Candidates, corpus: Corpus) -> None:
    assert c.source_names == ("src",)
    assert len(np.unique(c.item_id)) == len(c)
    assert np.all(np.diff(c.first_pass_score) <= 0), "not sorted by first-pass score"
    np.testing.assert_array_equal(c.author_id, corpus.item_author[c.item_id])
    np.testing.assert_array_equal(c.item_type, corpus.item_type[c.item_id])
    np.testing.assert_array_equal(c.sources_mask, np.ones(len(c), np.uint32))


def assert_top_by_score(c: Candidates, scores: Mapping[int, float], limit: int) -> None:
    """`c` holds the `limit` best of `scores` (all of them when fewer), with those scores."""
    best = sorted(scores, key=lambda i: -scores[i])[:limit]
    assert c.item_id.tolist() == best
    np.testing.assert_allclose(c.first_pass_score, [scores[i] for i in best], rtol=1e-6)


def assert_single_model_call(models: FakeModels, corpus: Corpus, member: int, pool: list[int]) -> None:
    """One call to 'first_pass' whose rows are the first-pass features of exactly `pool`."""
    assert len(models.calls) == 1
    call = models.calls[0]
    assert (call.model, call.routing_key) == ("first_pass", member)
    assert call.timeout_s == pytest.approx(0.3)  # the request's remaining budget
    x = call.inputs[FIRST_PASS_INPUT]
    assert x.shape == (len(pool), len(FIRST_PASS_FEATURES))
    expected = first_pass_features(corpus, member, np.array(sorted(pool), dtype=np.int64))
    np.testing.assert_array_equal(np.unique(x, axis=0), np.unique(expected, axis=0))


# --- network ----------------------------------------------------------------------------------------------


def network_pool(member: int, per_author: int, types: set[ItemType]) -> list[int]:
    pool = []
    for author in CONNECTIONS[member]:
        newest = sorted((i for i in ITEMS if author_of(i) == author), key=age_of)[:per_author]
        pool += [i for i in newest if item_type_of(i) in types]
    return pool


@pytest.mark.parametrize(("member", "per_author"), [(1, 3), (1, 6), (3, 2), (3, 4)])
async def test_network_takes_the_newest_posts_of_each_connection(
    build: Build, corpus: Corpus, models: FakeModels, member: int, per_author: int
) -> None:
    ctx, c = await run_source(build, "source.network", member, per_author=per_author, limit=100)
    pool = network_pool(member, per_author, {POST})
    assert pool, "test data must give this member some posts"
    assert_well_formed(c, corpus)
    assert set(c.item_type.tolist()) == {POST}
    assert sorted(c.item_id.tolist()) == sorted(pool)
    assert_top_by_score(c, reference_scores(corpus, member, pool), 100)
    assert_single_model_call(models, corpus, member, pool)
    assert ctx.models == [ModelUse("first_pass", "fake/first_pass", "fake")]


async def test_network_respects_limit_and_item_types(build: Build, corpus: Corpus) -> None:
    _, c = await run_source(build, "source.network", 3, per_author=6, item_types=["post", "article"], limit=5)
    pool = network_pool(3, 6, {POST, ARTICLE})
    assert len(pool) > 5
    assert_well_formed(c, corpus)
    assert_top_by_score(c, reference_scores(corpus, 3, pool), 5)


async def test_network_scores_the_newest_when_over_retrieve(build: Build, corpus: Corpus, models: FakeModels) -> None:
    _, c = await run_source(
        build, "source.network", 3, per_author=6, item_types=["post", "article", "job"], limit=4, retrieve=4
    )
    newest = sorted(sorted(network_pool(3, 6, {POST, ARTICLE, JOB}), key=age_of)[:4])
    assert sorted(c.item_id.tolist()) == newest
    assert models.calls[0].inputs[FIRST_PASS_INPUT].shape[0] == 4


@pytest.mark.parametrize("member", [6, 10_000])
async def test_network_is_empty_without_connections_and_calls_no_model(
    build: Build, models: FakeModels, member: int
) -> None:
    ctx, c = await run_source(build, "source.network", member)
    assert len(c) == 0
    assert c.source_names == ("src",)
    assert models.calls == []
    assert ctx.models == []


# --- jobs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("member", [1, 2])
async def test_jobs_retrieves_the_most_similar_jobs(
    build: Build, corpus: Corpus, models: FakeModels, member: int
) -> None:
    _, c = await run_source(build, "source.jobs", member, retrieve=4, limit=3)
    jobs = [i for i in ITEMS if item_type_of(i) == JOB]
    similarity = {i: float(corpus.item_topics[i] @ corpus.member_topics[member]) for i in jobs}
    scored = set(_pool_items(models, corpus, member, jobs))
    assert len(scored) == 4
    assert min(similarity[i] for i in scored) >= max(similarity[i] for i in set(jobs) - scored)
    assert_well_formed(c, corpus)
    assert set(c.item_type.tolist()) == {JOB}
    assert_top_by_score(c, reference_scores(corpus, member, sorted(scored)), 3)


def _pool_items(models: FakeModels, corpus: Corpus, member: int, candidates: list[int]) -> list[int]:
    """Which of `candidates` the (single) first-pass call scored, recognised by their feature rows."""
    x = models.calls[0].inputs[FIRST_PASS_INPUT]
    rows = first_pass_features(corpus, member, np.array(candidates, dtype=np.int64))
    return [i for i, row in zip(candidates, rows, strict=True) if (x == row).all(axis=1).any()]


async def test_jobs_serves_cold_starts(build: Build, corpus: Corpus) -> None:
    _, c = await run_source(build, "source.jobs", 10_000, retrieve=10, limit=10)
    assert sorted(c.item_id.tolist()) == [i for i in ITEMS if item_type_of(i) == JOB]


# --- trending ---------------------------------------------------------------------------------------------


def trend(corpus: Corpus, item: int, half_life_hours: float) -> float:
    return (
        math.log1p(float(corpus.item_popularity[item]))
        - math.log(2) * float(corpus.item_age_hours[item]) / half_life_hours
    )


async def test_trending_scores_the_most_trending_articles_and_posts(
    build: Build, corpus: Corpus, models: FakeModels
) -> None:
    _, c = await run_source(build, "source.trending", 2, retrieve=6, limit=4, half_life_hours=12.0)
    eligible = [i for i in ITEMS if item_type_of(i) in (POST, ARTICLE)]
    scored = set(_pool_items(models, corpus, 2, eligible))
    assert len(scored) == 6
    assert len(models.calls[0].inputs[FIRST_PASS_INPUT]) == 6
    trends = {i: trend(corpus, i, 12.0) for i in eligible}
    assert min(trends[i] for i in scored) >= max(trends[i] for i in set(eligible) - scored)
    assert_well_formed(c, corpus)
    assert set(c.item_type.tolist()) <= {POST, ARTICLE}
    assert_top_by_score(c, reference_scores(corpus, 2, sorted(scored)), 4)


async def test_trending_retrieves_the_same_items_for_everyone(build: Build, models: FakeModels) -> None:
    step = build("source.trending", "src", retrieve=6, limit=6)
    for member in (1, 4, 10_000):
        await run_steps(make_ctx(member_id=member), build("rewrite"), step)
    shapes = {call.inputs[FIRST_PASS_INPUT].shape for call in models.calls}
    assert shapes == {(6, len(FIRST_PASS_FEATURES))}
    popularity = [call.inputs[FIRST_PASS_INPUT][:, 0].tolist() for call in models.calls]
    assert popularity[0] == popularity[1] == popularity[2]


# --- hashtags ---------------------------------------------------------------------------------------------


def hashtag_pool(member: int, per_hashtag: int, types: set[ItemType]) -> dict[int, int]:
    """item -> number of followed hashtags it was found through."""
    found: dict[int, int] = {}
    for tag in FOLLOWS[member]:
        newest = sorted((i for i in ITEMS if tag in hashtags_of(i) and item_type_of(i) in types), key=age_of)[
            :per_hashtag
        ]
        for i in newest:
            found[i] = found.get(i, 0) + 1
    return found


@pytest.mark.parametrize(("member", "per_hashtag"), [(1, 50), (1, 2), (4, 3)])
async def test_hashtags_finds_posts_carrying_followed_hashtags(
    build: Build, corpus: Corpus, models: FakeModels, member: int, per_hashtag: int
) -> None:
    _, c = await run_source(build, "source.hashtags", member, per_hashtag=per_hashtag, limit=50)
    pool = list(hashtag_pool(member, per_hashtag, {POST}))
    assert_well_formed(c, corpus)
    assert set(c.item_type.tolist()) == {POST}
    for item in c.item_id.tolist():
        assert set(hashtags_of(item)) & set(FOLLOWS[member])
    assert sorted(c.item_id.tolist()) == sorted(pool)
    assert_top_by_score(c, reference_scores(corpus, member, pool), 50)
    assert_single_model_call(models, corpus, member, pool)


async def test_hashtags_prefers_items_matching_more_followed_hashtags(build: Build, models: FakeModels) -> None:
    pool = hashtag_pool(1, 50, {POST, ARTICLE, JOB})
    doubles = sorted(i for i, n in pool.items() if n == 2)
    assert 0 < len(doubles) < len(pool)
    _, c = await run_source(
        build, "source.hashtags", 1, item_types=["post", "article", "job"], retrieve=len(doubles), limit=len(doubles)
    )
    assert sorted(c.item_id.tolist()) == doubles


async def test_hashtags_is_empty_for_a_member_following_none(build: Build, models: FakeModels) -> None:
    _, c = await run_source(build, "source.hashtags", 3)
    assert len(c) == 0
    assert models.calls == []


# --- shared behaviour -------------------------------------------------------------------------------------

SOURCES = ["source.network", "source.jobs", "source.trending", "source.hashtags"]


@pytest.mark.parametrize("type_name", SOURCES)
async def test_source_declares_its_slot_and_uses_the_configured_model(
    build: Build, models: FakeModels, type_name: str
) -> None:
    step = build(type_name, "mine", model="fpr_x")
    assert step.writes == {source_key("mine")}
    await run_steps(make_ctx(member_id=1), build("rewrite"), step)
    assert [call.model for call in models.calls] == ["fpr_x"]


@pytest.mark.parametrize("type_name", SOURCES)
async def test_degraded_first_pass_marks_the_request(build: Build, models: FakeModels, type_name: str) -> None:
    models.degrade("fell back to fpr_backup")
    ctx, c = await run_source(build, type_name, 1)
    assert len(c) > 0
    assert [f.reason for f in ctx.failures] == ["src: dependency"]
    assert "fell back to fpr_backup" in ctx.failures[0].message


@pytest.mark.parametrize(
    "outputs",
    [
        {"scores": np.zeros(3, np.float32)},  # wrong name
        {"score": np.zeros((3, 2), np.float32)},  # wrong shape
        {"score": np.full(1, np.nan, np.float32)},  # non-finite (shape fixed below)
    ],
)
async def test_malformed_first_pass_output_is_a_dependency_failure(
    build: Build, answers: Answers, outputs: dict[str, np.ndarray]
) -> None:
    def answer(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(inputs[FIRST_PASS_INPUT])
        return {k: np.resize(v, (n, *v.shape[1:])) if k == "score" and v.ndim == 1 else v for k, v in outputs.items()}

    answers.first_pass = answer
    with pytest.raises(DependencyFailure) as caught:
        await run_source(build, "source.trending", 1)
    assert caught.value.category is Category.DEPENDENCY
    assert caught.value.step == "src"


async def test_column_vector_scores_are_accepted(build: Build, corpus: Corpus, answers: Answers) -> None:
    answers.first_pass = lambda inputs: {"score": first_pass_answer(inputs)["score"][:, None]}
    _, c = await run_source(build, "source.network", 1, per_author=6)
    assert_top_by_score(c, reference_scores(corpus, 1, network_pool(1, 6, {POST})), 300)


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 10, "retrieve": 5}, {"per_author": 0}, {"item_types": []}, {"item_types": ["video"]}],
)
def test_bad_source_params_fail_at_build(params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        NetworkParams.model_validate(params)
