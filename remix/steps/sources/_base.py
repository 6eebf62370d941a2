"""What every first-pass source shares: retrieve candidate ids, score them with a declared first-pass model,
keep the best. A kind (kv_list, static, ann, grpc) only says how ids are retrieved (`Retriever`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from engines.errors import EngineError
from features.registry import Feature
from kvstore.errors import StoreError
from remix.context import Context
from remix.failures import DependencyFailure, Failure
from remix.keys import Key
from remix.registry import StepParams
from remix.steps._select import top_k
from remix.steps.candidates import Candidates, RowsOf
from remix.steps.coalesce import CoalescedScorer
from remix.steps.keys import source_key
from remix.steps.scoring import resolve_features
from remix.steps.services import Services

I64 = npt.NDArray[np.int64]


class SourceParams(StepParams):
    """`model`: the first-pass model (its declared signature says what it reads); its first head is the
    first-pass score. `retrieve`: most ids handed to it; `limit`: most candidates written. `item_type` and
    `author`: features holding each candidate's type and author id (merge and blend use them; 0 when
    not configured)."""

    model: str = Field(min_length=1)
    limit: int = Field(default=300, gt=0)
    retrieve: int = Field(default=1000, gt=0)
    item_type: str | None = None
    author: str | None = None
    on_scoring_failure: Literal["fail", "unscored"] = "fail"
    """`unscored`: when the first pass cannot run (its features or model unavailable), keep the retrieved
    ids in retrieval order, unscored (scores 1 .. 0 by position, type and author unknown: 0), and mark the
    answer degraded. For sources that still retrieve without the store (a static list, a remote service)."""

    @model_validator(mode="after")
    def _retrieve_covers_limit(self) -> SourceParams:
        if self.retrieve < self.limit:
            raise ValueError(f"retrieve ({self.retrieve}) must be >= limit ({self.limit})")
        return self


class Retriever(Protocol):
    """How a source finds ids. `reads`: keys it needs beyond QUERY (e.g. a member row). `tables`: the
    store tables it reads at the request's versions (none: it reads none, or resolves its own)."""

    reads: frozenset[Key[Any]]
    tables: frozenset[str]

    async def retrieve(self, ctx: Context, *, limit: int) -> I64:
        """Unique candidate ids, at most `limit`, best first when the retriever knows an order."""
        ...


class DeclaredSource:
    """A source step: reads QUERY, TABLE_VERSIONS, the member rows its model and retriever need; writes
    `source_key(name)`: at most `limit` candidates, best first-pass score first (an empty set when
    retrieval finds nothing; then no model is called)."""

    optional_reads: frozenset[Key[Any]] = frozenset()

    def __init__(self, name: str, params: SourceParams, services: Services, retriever: Retriever) -> None:
        self.name = name
        self.key = source_key(name)
        self.writes: frozenset[Key[Any]] = frozenset({self.key})
        self._params = params
        self._retriever = retriever
        self._signature = services.signature(params.model, step=name)
        meta = resolve_features(services, [n for n in (params.item_type, params.author) if n is not None], step=name)
        model_features: Iterable[Feature] = (f for t in self._signature.inputs for f in t.features)
        # Shared with every source scoring with the same model and features: a request's sources score together.
        self._scorer = CoalescedScorer.shared(services, self._signature, [*model_features, *meta])
        self.reads: frozenset[Key[Any]] = self._scorer.inputs.reads | retriever.reads
        self.tables: frozenset[str] = self._scorer.inputs.tables | retriever.tables

    async def __call__(self, ctx: Context) -> None:
        item_ids = await self._retriever.retrieve(ctx, limit=self._params.retrieve)
        if len(item_ids) == 0:
            ctx.set(self.key, Candidates.empty((self.name,)))
            return
        try:
            scored = await self._scorer.score(ctx, self.name, item_ids)
        except (DependencyFailure, StoreError, EngineError) as error:
            if self._params.on_scoring_failure == "fail":
                raise
            ctx.degrade(Failure.of(self.name, error))
            kept = item_ids[: self._params.limit]
            position = (
                np.linspace(1.0, 0.0, len(kept), dtype=np.float32) if len(kept) > 1 else np.ones(len(kept), np.float32)
            )
            unscored = Candidates.from_source(
                self.name,
                item_id=kept,
                item_type=np.zeros(len(kept), np.int8),
                author_id=np.zeros(len(kept), np.int64),
                first_pass_score=position,
            )
            ctx.set(self.key, unscored)
            return
        best = top_k(scored.scores, self._params.limit)
        rows, frame = scored.rows(best), scored.frame
        n = len(best)
        item_type = (
            np.zeros(n, np.int8) if self._params.item_type is None else frame.get(self._params.item_type)[rows, 0]
        )
        author = np.zeros(n, np.int64) if self._params.author is None else frame.get(self._params.author)[rows, 0]
        # Every per-candidate value of the batch goes along (the model's inputs and what they were computed
        # from), as a view: a later step declaring the same features reuses them instead of reading or
        # computing them again (request-level ones, one row broadcast, are not per candidate).
        carried = RowsOf(frame.values, scored.per_row, rows)
        found = Candidates.from_source(
            self.name,
            item_id=item_ids[best],
            item_type=item_type,
            author_id=author,
            first_pass_score=scored.scores[best],
            features=carried,
        )
        ctx.set(self.key, found)


def unique_in_order(ids: I64, limit: int) -> I64:
    """The first `limit` distinct non-negative ids of `ids`, in their order (padding and repeats dropped)."""
    ids = ids[ids >= 0]
    ranked = np.sort(ids)  # an unstable sort is enough to find repeats, and several times cheaper
    if not (ranked[1:] == ranked[:-1]).any():  # the usual case: lists are written without repeats
        return np.asarray(ids[:limit], dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    repeated = np.empty(len(ids), dtype=np.bool_)
    repeated[order] = np.r_[False, ids[order][1:] == ids[order][:-1]]  # later copies of an id, in input order
    return np.asarray(ids[~repeated][:limit], dtype=np.int64)
