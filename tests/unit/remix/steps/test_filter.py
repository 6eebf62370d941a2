"""`filter`: predicates over declared features, counted in the trace."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError

from remix import guard
from remix.step import Step
from remix.steps import FILTERED, MERGED, Candidates

from .conftest import MEMBER_VIEWS, candidates_of, make_ctx, run_steps

Build = Callable[..., Step]


def merged(*items: int) -> Candidates:
    return candidates_of(*items, scores=[0.5] * len(items))


async def test_drops_by_rule_and_counts_each_rule_in_the_trace(build: Build) -> None:
    rules = [
        {"name": "blocked_author", "feature": "author_is_connection", "op": "eq", "value": 1.0},
        {"name": "unpopular", "feature": "item_log_popularity", "op": "lt", "value": 1.0},
    ]
    step = guard(build("filter", rules=rules))
    ctx = await run_steps(make_ctx(member_id=1), build("rewrite"), build("features", views=list(MEMBER_VIEWS)))
    ctx.set(MERGED, merged(2, 3, 4, 17, 5))  # authors 2, 3, 4, 2, 5; member 1 is connected to 2 and 3
    await step(ctx)
    kept = ctx.get(FILTERED)
    # popularity: 2 -> 9, 3 -> 5, 4 -> 1, 17 -> 0, 5 -> 14 (log1p(1) < 1: item 4 is unpopular)
    assert list(kept.item_id) == [5]
    assert ctx.trace.by_name("filter").detail == "dropped 4 of 5: blocked_author 3, unpopular 1"


def test_rules_need_scalar_known_features(build: Build) -> None:
    with pytest.raises(ValueError, match="needs a scalar feature"):
        build("filter", rules=[{"name": "x", "feature": "item_embedding.vector", "op": "gt", "value": 0}])
    with pytest.raises(ValueError, match="unknown feature 'item_popularity'"):
        build("filter", rules=[{"name": "x", "feature": "item_popularity", "op": "gt", "value": 0}])
    with pytest.raises(ValidationError, match="duplicate rule names"):
        build("filter", rules=[{"name": "x", "feature": "item_log_popularity", "op": "gt", "value": 0}] * 2)
