"""Without the store: `features.defaults`, `rank` failing over, configured default vectors, the feed workflow."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from engines.fake import FakeModels
from kvstore.errors import StoreError, StoreTimeout, StoreUnavailable
from remix.corpus import Corpus
from remix.executor import run_workflow
from remix.failures import DependencyFailure
from remix.feature_spec import MEMBER_FEATURES, OBJECTIVES, RANKER_INPUT, RANKER_OUTPUT
from remix.request import FeedRequest
from remix.services import Services
from remix.step import Step
from remix.steps import (
    EMBEDDINGS_MISSING,
    FEED,
    MEMBER_DEFAULTED,
    MEMBER_EMBEDDING,
    MERGED,
    RANKED,
    TABLE_VERSIONS,
    FeaturesParams,
    RankParams,
)
from remix.steps import MEMBER_FEATURES as MEMBER_FEATURES_KEY
from remix.trace import Outcome

from .conftest import (
    DIM,
    FIRST_PASS_MODELS,
    CountingStore,
    first_pass_answer,
    make_ctx,
    ranker_answer,
    run_steps,
)
from .test_rank import ITEMS, merged_of
from .test_workflow import assert_valid_feed, build_workflow, load_spec

Build = Callable[..., Step]


async def test_features_defaults_write_every_slot_without_the_store(build: Build, store: CountingStore) -> None:
    store.fail_with(StoreUnavailable("down", store="memory"))
    ctx = await run_steps(make_ctx(), build("rewrite"), build("features.defaults", defaults={"member": [1, 2, 3, 4]}))
    assert dict(ctx.get(TABLE_VERSIONS)) == {}
    assert ctx.table_versions == {}
    np.testing.assert_array_equal(ctx.get(MEMBER_EMBEDDING), [1, 2, 3, 4])
    np.testing.assert_array_equal(ctx.get(MEMBER_FEATURES_KEY), np.zeros(len(MEMBER_FEATURES)))
    assert ctx.get(MEMBER_DEFAULTED) == {"member", "member_features"}
    bare = await run_steps(make_ctx(), build("rewrite"), build("features.defaults"))
    assert bare.get(MEMBER_EMBEDDING).shape == (0,)  # no dim is known without the store


async def test_rank_without_resolved_versions_is_a_dependency_failure(
    build: Build, corpus: Corpus, store: CountingStore
) -> None:
    ctx = await run_steps(make_ctx(), build("rewrite"), build("features.defaults"))
    ctx.set(MERGED, merged_of(ITEMS, corpus))
    store.lookups.clear()
    with pytest.raises(DependencyFailure, match=r"no table version was resolved for \['author', 'hashtag', 'item'\]"):
        await build("rank")(ctx)
    assert store.lookups == []


async def test_configured_defaults_fill_ids_without_rows(
    build: Build, corpus: Corpus, store: CountingStore, models: FakeModels
) -> None:
    store.put_rows("item", "v2", {i: [i / 100, 0, 0, 0] for i in ITEMS[1:]}, dim=DIM)  # item ITEMS[0] has no row
    ctx = await run_steps(make_ctx(member_id=6), build("rewrite"), build("features", defaults={"member": [7, 7, 7, 7]}))
    np.testing.assert_array_equal(ctx.get(MEMBER_EMBEDDING), [7, 7, 7, 7])  # member 6 has no row
    ctx.set(MERGED, merged_of(ITEMS, corpus))
    await build("rank", defaults={"item": [-1, -1, -1, -1]})(ctx)
    x = models.calls[-1].inputs[RANKER_INPUT]
    np.testing.assert_array_equal(x[:, :DIM], np.full((len(ITEMS), DIM), 7.0))
    np.testing.assert_array_equal(x[0, DIM : 2 * DIM], [-1, -1, -1, -1])
    assert dict(ctx.get(EMBEDDINGS_MISSING))["item"] == 1


async def test_a_default_of_the_wrong_width_is_a_dependency_failure(
    build: Build, corpus: Corpus, store: CountingStore
) -> None:
    store.put_rows("item", "v2", {}, dim=DIM)
    ctx = await run_steps(make_ctx(), build("rewrite"), build("features"))
    ctx.set(MERGED, merged_of(ITEMS, corpus))
    with pytest.raises(DependencyFailure, match="'item' has 2 values, the table's rows 4"):
        await build("rank", defaults={"item": [1, 2]})(ctx)


@pytest.mark.parametrize(
    ("params", "kwargs", "message"),
    [
        (RankParams, {"defaults": {"member": [1.0]}}, "does not read"),
        (RankParams, {"defaults": {"item": []}}, "non-empty and finite"),
        (FeaturesParams, {"defaults": {"item": [1.0]}}, "does not read"),
        (FeaturesParams, {"defaults": {"member": [float("nan")]}}, "non-empty and finite"),
    ],
)
def test_defaults_are_validated(params: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        params(**kwargs)


def whole_answer(inputs: Any) -> dict[str, np.ndarray]:
    return {RANKER_OUTPUT: np.full((len(inputs["item_id"]), len(OBJECTIVES)), 0.25, np.float32)}


@pytest.mark.parametrize("error", [StoreUnavailable("down", store="memory"), StoreTimeout("slow", store="memory")])
async def test_the_feed_workflow_answers_degraded_without_the_store(
    corpus: Corpus, store: CountingStore, error: StoreError
) -> None:
    scripted = {name: first_pass_answer for name in FIRST_PASS_MODELS}
    models = FakeModels({**scripted, "feed_ranker": ranker_answer, "feed_ranker_whole": whole_answer})
    services = Services(models=models, store=store, corpus=corpus, clock=time.monotonic)
    store.fail_with(error)
    ctx = await run_workflow(build_workflow(load_spec(), services), FeedRequest("r1", 1, 6))
    assert_valid_feed(ctx, 6)
    assert [f.reason for f in ctx.failures] == [
        f"features: {'dependency' if isinstance(error, StoreUnavailable) else 'timeout'}",
        "rank: dependency",
    ]
    assert ctx.trace.by_name("features").outcome is Outcome.FELL_BACK
    assert ctx.trace.by_name("rank").outcome is Outcome.FELL_BACK
    assert ctx.trace.by_name("rank.whole_model").outcome is Outcome.OK
    np.testing.assert_array_equal(ctx.get(RANKED).scores, 0.25)  # scored by the whole model
    assert len(ctx.get(FEED)) == 6
