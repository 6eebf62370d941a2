"""`rank`: the second pass, a multi-task model over looked-up embeddings; and its fallback
`rank.first_pass_order`."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from engines.base import Models
from kvstore.base import EmbeddingStore, Lookup
from remix.candidates import F32, Candidates
from remix.context import Context
from remix.failures import DependencyFailure
from remix.feature_spec import (
    OBJECTIVES,
    RANKER_INPUT,
    RANKER_OUTPUT,
    dense_features,
    hashtag_ids,
    pool_multi_valued,
    ranker_input,
)
from remix.keys import Key
from remix.registry import StepParams, StepType
from remix.services import Services
from remix.steps._defaults import check_defaults, with_defaults
from remix.steps._model_call import infer, output
from remix.steps.keys import (
    EMBEDDINGS_MISSING,
    MEMBER_EMBEDDING,
    MEMBER_FEATURES,
    MERGED,
    QUERY,
    RANKED,
    TABLE_VERSIONS,
)

ITEM_TABLE, AUTHOR_TABLE, HASHTAG_TABLE = "item", "author", "hashtag"


def weight_vector(weights: Mapping[str, float]) -> F32:
    """`weights` as a vector over OBJECTIVES, in their order (objectives left out weigh 0)."""
    return np.array([weights.get(o, 0.0) for o in OBJECTIVES], dtype=np.float32)


def by_utility(merged: Candidates, scores: F32, weights: F32) -> Candidates:
    """`merged` with its second-pass `scores` and utility = scores @ weights, ordered by utility descending,
    ties in `merged` order (shared by `rank` and `rank.whole_model`)."""
    utility = scores @ weights
    order = np.argsort(-utility, kind="stable")
    return merged.take(order).with_scores(scores[order], OBJECTIVES, utility[order])


class RankParams(StepParams):
    """`weights`: objective -> weight of its head in the utility (objectives left out weigh 0).
    `pool`: how an item's hashtag vectors combine into one. `defaults`: table ('item', 'author',
    'hashtag') -> the vector an id without a row gets (zeros when not configured)."""

    model: str = "feed_ranker"
    weights: dict[str, float] = Field(
        default_factory=lambda: {"click": 1.0, "comment": 0.5, "share": 0.5, "long_dwell": 0.3}
    )
    pool: Literal["mean", "sum"] = "mean"
    defaults: dict[str, list[float]] = Field(default_factory=dict)

    @field_validator("defaults")
    @classmethod
    def _looked_up_tables(cls, defaults: dict[str, list[float]]) -> dict[str, list[float]]:
        return check_defaults(defaults, (ITEM_TABLE, AUTHOR_TABLE, HASHTAG_TABLE))

    @field_validator("weights")
    @classmethod
    def _known_objectives(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(OBJECTIVES))
        if unknown:
            raise ValueError(f"weights name unknown objectives {unknown} (objectives: {list(OBJECTIVES)})")
        if not all(math.isfinite(w) for w in weights.values()):
            raise ValueError(f"weights must be finite: {weights}")
        if not any(weights.values()):
            raise ValueError("at least one weight must be non-zero")
        return weights


class Rank:
    """Reads MERGED, QUERY, TABLE_VERSIONS and the member's vectors; writes RANKED and EMBEDDINGS_MISSING.

    Item, author and hashtag vectors come from one bulk lookup per table, all three concurrently, at the
    request's TABLE_VERSIONS (never a newer current version); each distinct id is asked for once. Ids
    without a row get the table's configured default (zeros) and are counted in EMBEDDINGS_MISSING. No
    version resolved for a table (`features` fell back) or any store error (unreachable, timeout, a version
    the model's pins refuse) is a DependencyFailure: the workflow's fallback serves (`rank.whole_model`,
    `rank.first_pass_order`). The model's `scores` output must be
    finite with shape (n, len(OBJECTIVES)), else DependencyFailure. utility = scores @ weights; RANKED
    is ordered by utility descending, ties in MERGED order.
    """

    writes: frozenset[Key[Any]] = frozenset({RANKED, EMBEDDINGS_MISSING})
    reads: frozenset[Key[Any]] = frozenset({MERGED, QUERY, TABLE_VERSIONS, MEMBER_EMBEDDING, MEMBER_FEATURES})
    optional_reads: frozenset[Key[Any]] = frozenset()

    def __init__(self, name: str, params: RankParams, services: Services) -> None:
        self.name = name
        self._model = params.model
        self._pool = params.pool
        self._weights = weight_vector(params.weights)
        self._models: Models = services.models
        self._store: EmbeddingStore = services.store
        self._corpus = services.corpus
        self._defaults = params.defaults

    async def __call__(self, ctx: Context) -> None:
        merged = ctx.get(MERGED)
        n = len(merged)
        if n == 0:
            empty = np.empty((0, len(OBJECTIVES)), np.float32)
            ctx.set(RANKED, merged.with_scores(empty, OBJECTIVES, np.empty(0, np.float32)))
            ctx.set(EMBEDDINGS_MISSING, MappingProxyType({}))
            return

        items, authors, hashtags, missing = await self._embeddings(ctx, merged)
        query = ctx.get(QUERY)
        dense = dense_features(
            self._corpus, query.corpus_member, merged.item_id, merged.first_pass_score, ctx.get(MEMBER_FEATURES)
        )
        x = ranker_input(ctx.get(MEMBER_EMBEDDING), items, authors, hashtags, dense)
        outputs = await infer(ctx, self.name, self._models, self._model, {RANKER_INPUT: x})
        scores = output(outputs, RANKER_OUTPUT, (n, len(OBJECTIVES)), step=self.name, model=self._model)
        ctx.set(RANKED, by_utility(merged, scores, self._weights))
        ctx.set(EMBEDDINGS_MISSING, missing)

    async def _embeddings(self, ctx: Context, merged: Candidates) -> tuple[F32, F32, F32, Mapping[str, int]]:
        """(item vectors, author vectors, pooled hashtag vectors), one row per candidate, and missing counts.

        Three concurrent bulk lookups at the request's versions, each distinct id asked for once.
        """
        versions = ctx.get(TABLE_VERSIONS)
        hashtags_flat, hashtags_indptr = hashtag_ids(self._corpus, merged.item_id)
        hashtags, hashtag_row = np.unique(hashtags_flat, return_inverse=True)
        authors, author_row = np.unique(merged.author_id, return_inverse=True)
        wanted = {ITEM_TABLE: merged.item_id, AUTHOR_TABLE: authors}
        if len(hashtags):
            wanted[HASHTAG_TABLE] = hashtags
        unresolved = sorted(set(wanted) - set(versions))
        if unresolved:
            raise DependencyFailure(
                f"no table version was resolved for {unresolved} (the store failed)", step=self.name
            )
        timeout_s = ctx.budget.remaining_s()
        found: list[Lookup] = await asyncio.gather(
            *(
                self._store.lookup(table, ids, version=versions[table], timeout_s=timeout_s)
                for table, ids in wanted.items()
            )
        )
        lookups = dict(zip(wanted, found, strict=True))
        vectors = {
            table: with_defaults(lookup, self._defaults.get(table), table=table, step=self.name)
            for table, lookup in lookups.items()
        }
        items = vectors[ITEM_TABLE]
        if HASHTAG_TABLE in vectors:
            hashtag_vectors = vectors[HASHTAG_TABLE][hashtag_row]
        else:
            hashtag_vectors = np.zeros((0, items.shape[1]), np.float32)
        return (
            items,
            vectors[AUTHOR_TABLE][author_row],
            pool_multi_valued(hashtag_vectors, hashtags_indptr, self._pool),
            MappingProxyType({table: lookup.missing for table, lookup in lookups.items()}),
        )


class FirstPassOrderParams(StepParams):
    """No parameters."""


class FirstPassOrder:
    """Fallback for `rank`: reads MERGED; writes RANKED with utility = first-pass score, ordered by it.

    No second pass ran, so RANKED has `scores` None and `objectives` () (not zeros: a client must not read
    a 0 click probability into it). EMBEDDINGS_MISSING is written empty: nothing was looked up.
    """

    reads: frozenset[Key[Any]] = frozenset({MERGED})
    optional_reads: frozenset[Key[Any]] = frozenset()
    writes: frozenset[Key[Any]] = frozenset({RANKED, EMBEDDINGS_MISSING})

    def __init__(self, name: str, params: StepParams, services: Services) -> None:
        self.name = name

    async def __call__(self, ctx: Context) -> None:
        merged = ctx.get(MERGED)
        order = np.argsort(-merged.first_pass_score, kind="stable")
        ranked = merged.take(order)
        ctx.set(RANKED, replace(ranked, scores=None, objectives=(), utility=ranked.first_pass_score.copy()))
        ctx.set(EMBEDDINGS_MISSING, MappingProxyType({}))


RANK = StepType("rank", RankParams, Rank)
FIRST_PASS_ORDER = StepType("rank.first_pass_order", FirstPassOrderParams, FirstPassOrder)
