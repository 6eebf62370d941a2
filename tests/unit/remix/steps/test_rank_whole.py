"""`rank.whole_model`: raw ids in, the whole model's scores out, ranked like `rank`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
import pytest
from pydantic import ValidationError

from engines.fake import FakeModels
from remix.corpus import Corpus
from remix.failures import DependencyFailure
from remix.feature_spec import DENSE_FEATURES, OBJECTIVES, RANKER_OUTPUT, dense_features
from remix.services import Services
from remix.step import Step
from remix.steps import EMBEDDINGS_MISSING, MEMBER_FEATURES, MERGED, RANKED, RankWholeParams
from remix.steps.rank_whole import (
    AUTHOR_ID,
    DENSE,
    HASHTAG_IDS,
    HASHTAG_MASK,
    ITEM_ID,
    MEMBER_ID,
    RANK_WHOLE_MODEL,
    WHOLE_MODEL_INPUTS,
    pad_csr,
)

from .conftest import CountingStore, author_of, hashtags_of, make_ctx, run_steps
from .test_rank import ITEMS, merged_of

Build = Callable[..., Step]


def whole_answer(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """click = item id / 100; the other heads 0.5."""
    scores = np.full((len(inputs[ITEM_ID]), len(OBJECTIVES)), 0.5, dtype=np.float32)
    scores[:, 0] = inputs[ITEM_ID] / 100
    return {RANKER_OUTPUT: scores}


@pytest.fixture
def whole_models() -> FakeModels:
    return FakeModels({"feed_ranker_whole": whole_answer})


async def test_sends_raw_ids_and_dense_features_and_ranks_by_utility(
    build: Build, corpus: Corpus, store: CountingStore, whole_models: FakeModels
) -> None:
    ctx = await run_steps(make_ctx(member_id=3, budget_s=0.25), build("rewrite"), build("features"))
    ctx.set(MERGED, merged_of(ITEMS, corpus))
    services = Services(models=whole_models, store=store, corpus=corpus, clock=time.monotonic)
    store.lookups.clear()
    await RANK_WHOLE_MODEL.build("rank", RankWholeParams(weights={"click": 1.0}), services)(ctx)

    assert store.lookups == []  # the tables are inside the model
    (call,) = whole_models.calls
    assert call.model == "feed_ranker_whole"
    assert set(call.inputs) == set(WHOLE_MODEL_INPUTS)
    x = call.inputs
    assert x[MEMBER_ID].tolist() == [3] * len(ITEMS)
    assert x[ITEM_ID].tolist() == ITEMS
    assert x[AUTHOR_ID].tolist() == [author_of(i) for i in ITEMS]
    for row, item in enumerate(ITEMS):
        tags = hashtags_of(item)
        assert x[HASHTAG_IDS][row, : len(tags)].tolist() == tags
        assert x[HASHTAG_MASK][row].tolist() == [1.0] * len(tags) + [0.0] * (x[HASHTAG_MASK].shape[1] - len(tags))
    merged = ctx.get(MERGED)
    expected = dense_features(corpus, 3, merged.item_id, merged.first_pass_score, ctx.get(MEMBER_FEATURES))
    np.testing.assert_array_equal(x[DENSE], expected)
    assert x[DENSE].shape == (len(ITEMS), len(DENSE_FEATURES))

    ranked = ctx.get(RANKED)
    assert ranked.item_id.tolist() == sorted(ITEMS, reverse=True)
    np.testing.assert_allclose(ranked.utility, np.array(sorted(ITEMS, reverse=True)) / 100, rtol=1e-6)
    assert ranked.objectives == OBJECTIVES
    assert dict(ctx.get(EMBEDDINGS_MISSING)) == {}


async def test_a_bad_output_is_a_dependency_failure(build: Build, corpus: Corpus, store: CountingStore) -> None:
    models = FakeModels({"feed_ranker_whole": lambda inputs: {RANKER_OUTPUT: np.full((2, 4), np.nan, np.float32)}})
    ctx = await run_steps(make_ctx(), build("rewrite"), build("features"))
    ctx.set(MERGED, merged_of(ITEMS, corpus))
    services = Services(models=models, store=store, corpus=corpus, clock=time.monotonic)
    with pytest.raises(DependencyFailure, match="shape"):
        await RANK_WHOLE_MODEL.build("rank", RankWholeParams(), services)(ctx)


def test_pad_csr() -> None:
    padded = pad_csr(np.array([4, 5, 6], np.int64), np.array([0, 2, 2, 3], np.int64))
    assert padded.ids.tolist() == [[4, 5], [0, 0], [6, 0]]
    assert padded.mask.tolist() == [[1, 1], [0, 0], [1, 0]]
    empty = pad_csr(np.array([], np.int64), np.array([0, 0], np.int64))
    assert empty.ids.shape == (1, 1)
    assert empty.mask.tolist() == [[0.0]]


def test_weights_are_validated_as_for_rank() -> None:
    with pytest.raises(ValidationError, match="unknown objectives"):
        RankWholeParams(weights={"likes": 1.0})
