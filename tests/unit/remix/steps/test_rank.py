from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytest
from pydantic import ValidationError

from engines.fake import FakeModels
from remix.candidates import Candidates
from remix.context import Context, ModelUse
from remix.corpus import Corpus
from remix.failures import Category, DependencyFailure
from remix.feature_spec import DENSE_FEATURES, OBJECTIVES, RANKER_INPUT, RANKER_OUTPUT, dense_features
from remix.step import Step
from remix.steps import (
    EMBEDDINGS_MISSING,
    MEMBER_FEATURES,
    MERGED,
    RANKED,
    RankParams,
)

from .conftest import DIM, Answers, CountingStore, author_of, hashtags_of, item_vector, make_ctx, run_steps

Build = Callable[..., Step]
ITEMS = [4, 9, 13, 22, 27, 30]


def merged_of(items: Sequence[int], corpus: Corpus) -> Candidates:
    ids = np.array(items, dtype=np.int64)
    return Candidates.from_source(
        "net",
        item_id=ids,
        item_type=corpus.item_type[ids],
        author_id=corpus.item_author[ids],
        first_pass_score=np.linspace(0.9, 0.1, len(ids)).astype(np.float32),
    )


async def prepared(build: Build, corpus: Corpus, items: Sequence[int] = ITEMS, member: int = 1) -> Context:
    ctx = await run_steps(make_ctx(member_id=member, budget_s=0.25), build("rewrite"), build("features"))
    ctx.set(MERGED, merged_of(items, corpus))
    return ctx


def scores_by_item(table: Mapping[int, Sequence[float]]) -> Callable[[Mapping[str, np.ndarray]], dict]:
    """A ranker answering fixed per-item scores; it recognises items by their embedding (id / 100)."""

    def answer(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = np.rint(inputs[RANKER_INPUT][:, DIM] * 100).astype(int)
        return {RANKER_OUTPUT: np.array([table[i] for i in items], dtype=np.float32)}

    return answer


async def test_looks_up_each_table_once_at_the_request_versions(
    build: Build, corpus: Corpus, store: CountingStore, models: FakeModels
) -> None:
    ctx = await prepared(build, corpus)
    # A newer version becomes current mid-request: this request must not see it.
    for table in ("item", "author", "hashtag"):
        store.put_rows(table, "v2", {i: [-1.0] * DIM for i in range(0, 40)}, dim=DIM)
    store.lookups.clear()
    await build("rank")(ctx)

    calls = {call.table: call for call in store.lookups}
    assert len(store.lookups) == 3
    assert set(calls) == {"item", "author", "hashtag"}
    assert {call.version for call in store.lookups} == {"v1"}
    assert {call.timeout_s for call in store.lookups} == {0.25}
    assert calls["item"].ids.tolist() == ITEMS
    assert calls["author"].ids.tolist() == sorted({author_of(i) for i in ITEMS})  # each author once
    assert calls["hashtag"].ids.tolist() == sorted({h for i in ITEMS for h in hashtags_of(i)})  # each hashtag once
    assert store.version_calls == [("member", "item", "author", "hashtag", "member_features")]  # only features asked

    x = models.calls[0].inputs[RANKER_INPUT]
    np.testing.assert_array_equal(x[:, DIM : 2 * DIM], np.array([item_vector(i) for i in ITEMS], np.float32))  # v1


@pytest.mark.parametrize("pool", ["mean", "sum"])
async def test_assembles_the_ranker_input(build: Build, corpus: Corpus, models: FakeModels, pool: str) -> None:
    ctx = await prepared(build, corpus)
    await build("rank", pool=pool)(ctx)
    x = models.calls[0].inputs[RANKER_INPUT]
    assert x.shape == (len(ITEMS), 4 * DIM + len(DENSE_FEATURES))
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x[:, :DIM], np.tile([1, 0, 0, 0], (len(ITEMS), 1)))  # member 1's embedding
    np.testing.assert_array_equal(x[:, 2 * DIM : 3 * DIM], [[0, author_of(i), 0, 0] for i in ITEMS])
    # hashtag h has vector [0, 0, h + 1, 0]
    pooled = [sum(h + 1 for h in hashtags_of(i)) / (len(hashtags_of(i)) if pool == "mean" else 1) for i in ITEMS]
    np.testing.assert_allclose(x[:, 3 * DIM : 4 * DIM], [[0, 0, p, 0] for p in pooled], rtol=1e-6)
    merged = ctx.get(MERGED)
    expected_dense = dense_features(corpus, 1, merged.item_id, merged.first_pass_score, ctx.get(MEMBER_FEATURES))
    np.testing.assert_array_equal(x[:, 4 * DIM :], expected_dense)
    call = models.calls[0]
    assert (call.model, call.routing_key, call.timeout_s) == ("feed_ranker", 1, 0.25)


async def test_utility_combines_heads_with_the_configured_weights(
    build: Build, corpus: Corpus, models: FakeModels, answers: Answers
) -> None:
    heads = {4: [0.1, 0.0, 0.9, 0.0], 9: [0.8, 0.0, 0.0, 0.0], 13: [0.5, 0.0, 0.3, 0.0],
             22: [0.0, 1.0, 0.0, 1.0], 27: [0.2, 0.0, 0.2, 0.0], 30: [0.6, 0.0, 0.0, 0.0]}  # fmt: skip
    answers.ranker = scores_by_item(heads)
    ctx = await prepared(build, corpus)
    await build("rank", weights={"click": 1.0, "share": 2.0})(ctx)

    ranked = ctx.get(RANKED)
    utility = {i: heads[i][0] + 2 * heads[i][2] for i in ITEMS}
    assert ranked.item_id.tolist() == sorted(ITEMS, key=lambda i: -utility[i])  # 4, 13, 9, 30, 27, 22
    np.testing.assert_allclose(ranked.utility, [utility[i] for i in ranked.item_id.tolist()], rtol=1e-6)
    np.testing.assert_array_equal(ranked.scores, np.array([heads[i] for i in ranked.item_id.tolist()], np.float32))
    assert ranked.objectives == OBJECTIVES
    np.testing.assert_array_equal(ranked.author_id, corpus.item_author[ranked.item_id])
    assert ctx.models == [ModelUse("feed_ranker", "fake/feed_ranker", "fake")]
    assert not ctx.degraded


async def test_equal_utilities_keep_merged_order(build: Build, corpus: Corpus, answers: Answers) -> None:
    every_item = list(range(1, 31))  # enough rows for an unstable sort to reorder ties
    answers.ranker = scores_by_item({i: [0.5 if i % 3 else 0.7, 0.0, 0.0, 0.0] for i in every_item})
    ctx = await prepared(build, corpus, items=every_item)
    await build("rank")(ctx)
    merged_order = ctx.get(MERGED).item_id.tolist()
    assert ctx.get(RANKED).item_id.tolist() == [i for i in merged_order if i % 3 == 0] + [
        i for i in merged_order if i % 3
    ]


async def test_missing_embeddings_default_to_zeros_and_are_counted(
    build: Build, corpus: Corpus, store: CountingStore, models: FakeModels
) -> None:
    ctx = await prepared(build, corpus)
    store.put_rows("item", "v1", {i: item_vector(i) for i in ITEMS if i not in (9, 22)}, dim=DIM)  # same version
    await build("rank")(ctx)
    x = models.calls[0].inputs[RANKER_INPUT]
    np.testing.assert_array_equal(x[[1, 3], DIM : 2 * DIM], np.zeros((2, DIM)))
    assert dict(ctx.get(EMBEDDINGS_MISSING)) == {"item": 2, "author": 0, "hashtag": 0}
    assert len(ctx.get(RANKED)) == len(ITEMS)


async def test_cold_start_member_is_ranked_from_defaults(build: Build, corpus: Corpus, models: FakeModels) -> None:
    ctx = await prepared(build, corpus, member=10_000)
    await build("rank")(ctx)
    x = models.calls[0].inputs[RANKER_INPUT]
    np.testing.assert_array_equal(x[:, :DIM], np.zeros((len(ITEMS), DIM)))
    merged = ctx.get(MERGED)
    np.testing.assert_array_equal(
        x[:, 4 * DIM :], dense_features(corpus, 0, merged.item_id, merged.first_pass_score, np.zeros(4, np.float32))
    )
    assert models.calls[0].routing_key == 10_000
    assert len(ctx.get(RANKED)) == len(ITEMS)


async def test_degraded_reason_is_propagated(build: Build, corpus: Corpus, models: FakeModels) -> None:
    models.degrade("primary target open circuit; answered by fallback")
    ctx = await prepared(build, corpus)
    await build("rank")(ctx)
    assert ctx.degraded
    [failure] = ctx.failures
    assert (failure.step, failure.category) == ("rank", Category.DEPENDENCY)
    assert "answered by fallback" in failure.message
    assert len(ctx.get(RANKED)) == len(ITEMS)


@pytest.mark.parametrize(
    ("make_output", "message"),
    [
        (lambda n: {"logits": np.zeros((n, 4), np.float32)}, "returned no 'scores' output"),
        (lambda n: {RANKER_OUTPUT: np.zeros((n, 3), np.float32)}, r"has shape \(6, 3\), expected \(6, 4\)"),
        (lambda n: {RANKER_OUTPUT: np.zeros((n + 1, 4), np.float32)}, r"has shape \(7, 4\)"),
        (lambda n: {RANKER_OUTPUT: np.zeros(n, np.float32)}, r"has shape \(6,\)"),
        (lambda n: {RANKER_OUTPUT: np.full((n, 4), np.nan, np.float32)}, "non-finite"),
    ],
)
async def test_malformed_ranker_output_is_a_dependency_failure(
    build: Build, corpus: Corpus, answers: Answers, make_output: Callable[[int], dict], message: str
) -> None:
    answers.ranker = lambda inputs: make_output(len(inputs[RANKER_INPUT]))
    ctx = await prepared(build, corpus)
    with pytest.raises(DependencyFailure, match=message) as caught:
        await build("rank")(ctx)
    assert caught.value.category is Category.DEPENDENCY
    assert caught.value.step == "rank"
    assert not ctx.has(RANKED)
    assert not ctx.has(EMBEDDINGS_MISSING)
    assert [use.model for use in ctx.models] == ["feed_ranker"]  # the call is still on record


async def test_empty_merged_set_calls_nothing(
    build: Build, corpus: Corpus, store: CountingStore, models: FakeModels
) -> None:
    ctx = await prepared(build, corpus, items=[])
    store.lookups.clear()
    await build("rank")(ctx)
    ranked = ctx.get(RANKED)
    assert len(ranked) == 0
    assert ranked.scores is not None
    assert ranked.scores.shape == (0, len(OBJECTIVES))
    assert store.lookups == []
    assert models.calls == []


def test_rank_and_its_fallback_declare_the_same_writes(build: Build) -> None:
    assert build("rank").writes == build("rank.first_pass_order").writes == {RANKED, EMBEDDINGS_MISSING}


async def test_first_pass_order_fallback(build: Build, corpus: Corpus, models: FakeModels) -> None:
    ctx = make_ctx()
    merged = merged_of([5, 6, 7, 8], corpus)
    ctx.set(MERGED, merged.take(np.array([2, 0, 3, 1])))  # out of order on purpose
    await build("rank.first_pass_order")(ctx)
    ranked = ctx.get(RANKED)
    assert ranked.item_id.tolist() == [5, 6, 7, 8]
    np.testing.assert_array_equal(ranked.utility, ranked.first_pass_score)
    assert ranked.scores is None
    assert ranked.objectives == ()
    assert dict(ctx.get(EMBEDDINGS_MISSING)) == {}
    assert models.calls == []
    assert ctx.models == []


@pytest.mark.parametrize(
    "weights",
    [{"clicks": 1.0}, {"click": 0.0, "share": 0.0}, {"click": float("nan")}, {"click": float("inf")}],
)
def test_bad_weights_fail_at_build(weights: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        RankParams(weights=weights)


def test_default_weights_cover_every_objective() -> None:
    assert set(RankParams().weights) == set(OBJECTIVES)
    with pytest.raises(ValidationError):
        RankParams.model_validate({"pool": "max"})
