from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pytest
from pydantic import ValidationError

from remix.step import Step
from remix.steps import FEED, QUERY, RANKED, BlendParams
from remix.steps.candidates import Candidates, ItemType

from .conftest import make_ctx, run_steps

Build = Callable[..., Step]


def ranked(authors: Sequence[int], utility: Sequence[float]) -> Candidates:
    n = len(authors)
    items = np.arange(100, 100 + n, dtype=np.int64)
    c = Candidates(
        item_id=items,
        item_type=np.full(n, ItemType.POST, np.int8),
        author_id=np.array(authors, dtype=np.int64),
        first_pass_score=np.zeros(n, np.float32),
        source=(np.arange(n) % 2).astype(np.int16),
        sources_mask=np.where(np.arange(n) % 3 == 0, 0b11, 1 << (np.arange(n) % 2)).astype(np.uint32),
        source_names=("a", "b"),
    )
    scores = np.repeat(np.arange(n, dtype=np.float32)[:, None], 2, axis=1)
    return c.with_scores(scores, ("click", "share"), np.array(utility, dtype=np.float32))


async def blend(build: Build, candidates: Candidates, count: int, **params: object) -> Candidates:
    ctx = await run_steps(make_ctx(count=count), build("rewrite"))
    ctx.set(RANKED, candidates)
    await build("blend", **params)(ctx)
    assert ctx.get(QUERY).count == count
    return ctx.get(FEED)


async def test_keeps_at_most_n_items_per_author_in_utility_order(build: Build) -> None:
    c = ranked([1, 1, 1, 2, 1, 2, 3, 2], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    feed = await blend(build, c, count=10)
    assert feed.item_id.tolist() == [100, 101, 103, 105, 106]
    assert feed.author_id.tolist() == [1, 1, 2, 2, 3]


async def test_cuts_to_the_requested_count(build: Build) -> None:
    c = ranked([1, 1, 1, 2, 1, 2, 3, 2], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    assert (await blend(build, c, count=3)).item_id.tolist() == [100, 101, 103]
    assert (await blend(build, c, count=3, max_per_author=1)).item_id.tolist() == [100, 103, 106]


async def test_sorts_by_utility_and_keeps_ranked_order_on_ties(build: Build) -> None:
    c = ranked([5, 6, 7, 5, 6], [0.1, 0.5, 0.5, 0.5, 0.9])
    feed = await blend(build, c, count=10)
    assert feed.item_id.tolist() == [104, 101, 102, 103, 100]  # 0.9, then the 0.5 ties in RANKED order
    assert np.all(np.diff(feed.utility) <= 0)


async def test_carries_provenance_and_scores_along(build: Build) -> None:
    c = ranked([1, 1, 1, 2], [0.9, 0.8, 0.7, 0.6])
    feed = await blend(build, c, count=10)
    assert feed.source_names == ("a", "b")
    assert feed.source.tolist() == [0, 1, 1]
    assert [feed.source_list(r) for r in range(len(feed))] == [["a", "b"], ["b"], ["a", "b"]]
    np.testing.assert_array_equal(feed.scores, [[0, 0], [1, 1], [3, 3]])
    assert feed.objectives == ("click", "share")


async def test_matches_a_reference_on_random_input(build: Build) -> None:
    rng = np.random.default_rng(5)
    authors = rng.integers(1, 60, 600).tolist()
    utility = np.round(rng.random(600), 2).tolist()  # rounded: many ties
    feed = await blend(build, ranked(authors, utility), count=150, max_per_author=3)

    kept: list[int] = []
    per_author: dict[int, int] = {}
    for row in sorted(range(600), key=lambda r: -np.float32(utility[r])):  # Python's sort is stable
        if per_author.get(authors[row], 0) < 3:
            per_author[authors[row]] = per_author.get(authors[row], 0) + 1
            kept.append(100 + row)
    assert feed.item_id.tolist() == kept[:150]


async def test_empty_ranked_gives_an_empty_feed(build: Build) -> None:
    assert len(await blend(build, ranked([], []), count=10)) == 0


async def test_ranked_without_utility_is_a_programmer_error(build: Build) -> None:
    with pytest.raises(ValueError, match="RANKED has no utility"):
        await blend(build, replace(ranked([1], [0.5]), utility=None, scores=None), count=10)


def test_max_per_author_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        BlendParams(max_per_author=0)
