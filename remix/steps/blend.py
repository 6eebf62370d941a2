"""`blend`: the final list, diversified by author and cut to the requested count."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from remix.context import Context
from remix.keys import Key
from remix.registry import StepParams, StepType
from remix.steps._select import run_starts
from remix.steps.keys import FEED, QUERY, RANKED
from remix.steps.services import Services


class BlendParams(StepParams):
    max_per_author: int = Field(default=2, gt=0)


class Blend:
    """Reads RANKED and QUERY; writes FEED: the top `Query.count` items by utility, keeping at most
    `max_per_author` items of any author (an author's best ones). An author id <= 0 is unknown (a source
    that could not read item metadata): such items are not capped, since nothing says they share an author.

    Order is utility descending, ties in RANKED order. FEED is shorter than the count when the author cap
    leaves too few items; the cap is never relaxed to fill the list.
    """

    reads: frozenset[Key[Any]] = frozenset({RANKED, QUERY})
    optional_reads: frozenset[Key[Any]] = frozenset()
    writes: frozenset[Key[Any]] = frozenset({FEED})

    def __init__(self, name: str, params: BlendParams, services: Services) -> None:
        self.name = name
        self._max_per_author = params.max_per_author

    async def __call__(self, ctx: Context) -> None:
        ranked = ctx.get(RANKED)
        if ranked.utility is None:
            raise ValueError(f"{self.name}: RANKED has no utility; it must come from a rank step")
        by_utility = np.argsort(-ranked.utility, kind="stable")
        authors = ranked.author_id[by_utility]
        # Stable sort by author keeps utility order within an author; rank within author = position in run.
        by_author = np.argsort(authors, kind="stable")
        sorted_authors = authors[by_author]
        starts = run_starts(sorted_authors)
        run_lengths = np.diff(starts, append=len(sorted_authors))
        rank_in_author = np.empty(len(authors), dtype=np.int64)
        rank_in_author[by_author] = np.arange(len(authors)) - np.repeat(starts, run_lengths)
        kept = by_utility[(rank_in_author < self._max_per_author) | (authors <= 0)]
        ctx.set(FEED, ranked.take(kept[: ctx.get(QUERY).count]))


BLEND = StepType("blend", BlendParams, Blend)
