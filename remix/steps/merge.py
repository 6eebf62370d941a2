"""`merge`: one deduplicated, capped candidate set from every source that answered."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from remix.context import Context
from remix.failures import Category, Failure
from remix.keys import Key
from remix.registry import StepParams, StepType
from remix.steps._select import run_starts, top_k
from remix.steps.candidates import Candidates, RowsOf
from remix.steps.keys import MERGED, source_key
from remix.steps.services import Services

MAX_SOURCES = 32  # one bit per source in Candidates.sources_mask (uint32)


class MergeParams(StepParams):
    """`sources`: source step names, highest priority first. `quotas`: most candidates taken from a
    source (its best by first-pass score); sources without a quota are not limited. `max_candidates`:
    cap on what reaches the second pass (times the request's `quality` under overload)."""

    sources: tuple[str, ...] = Field(min_length=1, max_length=MAX_SOURCES)
    quotas: dict[str, int] = Field(default_factory=dict)
    max_candidates: int = Field(default=600, gt=0)

    @field_validator("sources")
    @classmethod
    def _unique(cls, sources: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(sources)) != len(sources):
            raise ValueError(f"duplicate source names in {list(sources)}")
        for name in sources:
            source_key(name)  # raises on a reserved name
        return sources

    @model_validator(mode="after")
    def _quotas_name_sources(self) -> MergeParams:
        unknown = sorted(set(self.quotas) - set(self.sources))
        if unknown:
            raise ValueError(f"quotas name sources not merged: {unknown} (sources: {list(self.sources)})")
        bad = {name: quota for name, quota in self.quotas.items() if quota <= 0}
        if bad:
            raise ValueError(f"quotas must be positive: {bad}")
        return self


class Merge:
    """Reads every `source_key(s)` optionally (a source that failed open left nothing); writes MERGED.

    An item produced by several sources appears once: `sources_mask` has the bit of each producer (bit i
    = `sources[i]`, `source_names` = `sources`), `source` is the producer first in `sources`, and
    `first_pass_score` is the best of its scores. Quotas apply per source before deduplication; the cap
    keeps the best first-pass scores. MERGED is ordered by first-pass score descending, ties by item id.
    Every row a source wrote counts as produced by that source.

    Under overload (`request.quality` < 1) the cap is ceil(max_candidates * quality), at least 1; when that
    removes candidates the answer is degraded with the reason "overload: second pass narrowed to N
    candidates".
    """

    reads: frozenset[Key[Any]] = frozenset()
    writes: frozenset[Key[Any]] = frozenset({MERGED})

    def __init__(self, name: str, params: MergeParams, services: Services) -> None:
        self.name = name
        self._sources = params.sources
        self._keys = tuple(source_key(source) for source in params.sources)
        self.optional_reads: frozenset[Key[Any]] = frozenset(self._keys)
        self._quotas = tuple(params.quotas.get(source) for source in params.sources)
        self._max_candidates = params.max_candidates

    async def __call__(self, ctx: Context) -> None:
        parts: list[Candidates] = []
        priorities: list[int] = []
        for index, (key, quota) in enumerate(zip(self._keys, self._quotas, strict=True)):
            if not ctx.has(key):
                continue
            part = ctx.get(key)
            if quota is not None and len(part) > quota:
                part = part.take(top_k(part.first_pass_score, quota))
            parts.append(part)
            priorities.append(index)
        if not parts or not any(len(p) for p in parts):  # nobody answered, or every answer was empty
            ctx.set(MERGED, Candidates.empty(self._sources))
            return

        item_id = np.concatenate([p.item_id for p in parts])
        source = np.repeat(np.array(priorities, dtype=np.int16), [len(p) for p in parts])
        score = np.concatenate([p.first_pass_score for p in parts])
        # Group rows by item, highest-priority producer first within each group.
        order = np.lexsort((source, item_id))
        sorted_ids = item_id[order]
        starts = run_starts(sorted_ids)
        primary = order[starts]
        bits = np.left_shift(np.uint32(1), source[order].astype(np.uint32))
        best_scores = np.maximum.reduceat(score[order], starts).astype(np.float32, copy=False)
        cap = self._max_candidates
        if ctx.request.quality < 1.0:
            cap = max(1, math.ceil(cap * ctx.request.quality))
            if len(primary) > cap:
                ctx.degrade(Narrowed(step=self.name, category=Category.TIMEOUT, message="overload", kept=cap))
        # Items are in id order here and top_k breaks ties by position: equal scores go to the lower item id.
        # The cap is chosen before any row is copied, so each column is gathered once.
        chosen = top_k(best_scores, cap)
        rows = primary[chosen]
        ctx.set(
            MERGED,
            Candidates(
                item_id=item_id[rows],
                item_type=np.concatenate([p.item_type for p in parts])[rows],
                author_id=np.concatenate([p.author_id for p in parts])[rows],
                first_pass_score=best_scores[chosen],
                source=source[rows],
                sources_mask=np.bitwise_or.reduceat(bits, starts)[chosen].astype(np.uint32, copy=False),
                source_names=self._sources,
                features=_carried(parts, rows),
            ),
        )


@dataclass(frozen=True)
class Narrowed(Failure):
    """The second pass ran on fewer candidates than declared because the gateway is overloaded."""

    kept: int = 0

    @property
    def reason(self) -> str:
        return f"overload: second pass narrowed to {self.kept} candidates"


def _carried(parts: list[Candidates], rows: np.ndarray) -> Mapping[str, np.ndarray]:
    """The upstream features every part carries, for the merged rows (a feature some part lacks is dropped:
    the step reading it computes it). Parts viewing one scoring batch stay a view of it. A part without
    rows (a source that found nothing) carries nothing and takes nothing away."""
    parts = [p for p in parts if len(p)]  # no rows: nothing in `rows` points into them
    first = parts[0].features
    if isinstance(first, RowsOf) and all(first.same_batch(p.features) for p in parts[1:]):
        views = [p.features for p in parts]
        batch_rows = np.concatenate([v.rows for v in views if isinstance(v, RowsOf)])
        return RowsOf(first.columns, first.names, batch_rows[rows])
    names = set(parts[0].features).intersection(*(p.features for p in parts[1:]))
    return {name: np.take(np.concatenate([p.features[name] for p in parts]), rows, axis=0) for name in sorted(names)}


MERGE = StepType("merge", MergeParams, Merge)
