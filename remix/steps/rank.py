"""`rank`: the second pass, a declared multi-task model over declared features; and its last-resort
fallback `rank.first_pass_order`.

Two-stage mode (embeddings looked up in the store) and whole-model mode (tables inside the model, ids as
inputs) are both `rank`, with different models: each model's signature says what it reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from remix.context import Context
from remix.keys import Key
from remix.registry import StepParams, StepType
from remix.steps._model_scores import head_scores
from remix.steps.candidates import F32, Candidates
from remix.steps.keys import CANDIDATE_KEYS, FEATURES_MISSING, RANKED, UTILITY_WEIGHTS
from remix.steps.scoring import signature_inputs
from remix.steps.services import Services


def weight_vector(weights: Mapping[str, float], heads: tuple[str, ...]) -> F32:
    """`weights` as a vector over `heads`, in their order (heads left out weigh 0)."""
    return np.array([weights.get(h, 0.0) for h in heads], dtype=np.float32)


def by_utility(merged: Candidates, scores: F32, heads: tuple[str, ...], weights: F32) -> Candidates:
    """`merged` with its second-pass `scores` and utility = scores @ weights, ordered by utility descending,
    ties in `merged` order. The features carried for the second pass are dropped: nothing after it reads
    them, and every later `take` would copy them."""
    utility = scores @ weights
    order = np.argsort(-utility, kind="stable")
    return replace(merged, features={}).take(order).with_scores(scores[order], heads, utility[order])


class RankParams(StepParams):
    """`model`: a declared model (its signature gives inputs and heads). `weights`: head -> weight in the
    utility (heads left out weigh 0). `candidates`: which set to rank (merged, or filtered after `filter`)."""

    model: str = Field(min_length=1)
    weights: dict[str, float]
    candidates: Literal["merged", "filtered"] = "merged"

    @field_validator("weights")
    @classmethod
    def _finite(cls, weights: dict[str, float]) -> dict[str, float]:
        if not all(math.isfinite(w) for w in weights.values()):
            raise ValueError(f"weights must be finite: {weights}")
        if not any(weights.values()):
            raise ValueError("at least one weight must be non-zero")
        return weights


class Rank:
    """Reads the candidate set, QUERY, TABLE_VERSIONS and the member rows its model needs; writes RANKED
    and FEATURES_MISSING.

    Features come from one bulk read per view, concurrently, at the request's TABLE_VERSIONS; rows a view
    lacks get the declared defaults and are counted in FEATURES_MISSING. No version resolved (`features`
    fell back) or any store error is a DependencyFailure: the workflow's fallback serves. The model's
    outputs must be finite with one column per head. RANKED is ordered by utility descending, ties in
    input order.
    """

    writes: frozenset[Key[Any]] = frozenset({RANKED, FEATURES_MISSING, UTILITY_WEIGHTS})
    optional_reads: frozenset[Key[Any]] = frozenset()

    def __init__(self, name: str, params: RankParams, services: Services) -> None:
        self.name = name
        self._signature = services.signature(params.model, step=name)
        heads = self._signature.heads
        unknown = sorted(set(params.weights) - set(heads))
        if unknown:
            raise ValueError(
                f"weights name heads {unknown} model {params.model!r} does not have (heads: {list(heads)})"
            )
        self._weights = weight_vector(params.weights, heads)
        self._weights_by_head = MappingProxyType({h: float(w) for h, w in zip(heads, self._weights, strict=True)})
        self._models = services.models
        self._inputs = signature_inputs(services, self._signature, step=name)
        self._candidates = CANDIDATE_KEYS[params.candidates]
        self.reads: frozenset[Key[Any]] = self._inputs.reads | {self._candidates}
        self.tables = self._inputs.tables

    async def __call__(self, ctx: Context) -> None:
        candidates = ctx.get(self._candidates)
        heads = self._signature.heads
        ctx.set(UTILITY_WEIGHTS, self._weights_by_head)
        if len(candidates) == 0:
            empty = np.empty((0, len(heads)), np.float32)
            ctx.set(RANKED, candidates.with_scores(empty, heads, np.empty(0, np.float32)))
            ctx.set(FEATURES_MISSING, MappingProxyType({}))
            return
        frame, missing = await self._inputs.frame(
            ctx, candidates.item_id, {"first_pass_score": candidates.first_pass_score}, candidates.features
        )
        scores = await head_scores(
            ctx, self.name, self._models, self._signature, self._inputs, frame, rows=candidates.item_id
        )
        ctx.set(RANKED, by_utility(candidates, scores, heads, self._weights))
        ctx.set(FEATURES_MISSING, MappingProxyType(missing))


class FirstPassOrderParams(StepParams):
    """`candidates`: which set to order (merged, or filtered)."""

    candidates: Literal["merged", "filtered"] = "merged"


class FirstPassOrder:
    """Fallback for `rank`: writes RANKED with utility = first-pass score, ordered by it (UTILITY_WEIGHTS
    empty).

    No second pass ran, so RANKED has `scores` None and `objectives` () (not zeros: a client must not read
    a 0 click probability into it). FEATURES_MISSING is written empty: nothing was read.
    """

    optional_reads: frozenset[Key[Any]] = frozenset()
    writes: frozenset[Key[Any]] = frozenset({RANKED, FEATURES_MISSING, UTILITY_WEIGHTS})

    def __init__(self, name: str, params: FirstPassOrderParams, services: Services) -> None:
        self.name = name
        self._candidates = CANDIDATE_KEYS[params.candidates]
        self.reads: frozenset[Key[Any]] = frozenset({self._candidates})

    async def __call__(self, ctx: Context) -> None:
        candidates = ctx.get(self._candidates)
        order = np.argsort(-candidates.first_pass_score, kind="stable")
        ranked = candidates.take(order)
        ctx.set(RANKED, replace(ranked, scores=None, objectives=(), utility=ranked.first_pass_score.copy()))
        ctx.set(FEATURES_MISSING, MappingProxyType({}))
        ctx.set(UTILITY_WEIGHTS, MappingProxyType({}))


RANK = StepType("rank", RankParams, Rank)
FIRST_PASS_ORDER = StepType("rank.first_pass_order", FirstPassOrderParams, FirstPassOrder)
