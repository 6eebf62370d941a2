"""`source.kv_list`: a precomputed per-member candidate list in the store (the network feed, people you
may know), read with the member's other rows by `features`, with a maximum age."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from features.registry import ViewFeature
from remix.context import Context
from remix.failures import DependencyFailure
from remix.keys import Key
from remix.registry import StepType
from remix.steps.keys import TABLE_VERSIONS, member_rows_key
from remix.steps.scoring import pinned_versions, resolve_features
from remix.steps.services import Services
from remix.steps.sources._base import I64, DeclaredSource, Retriever, SourceParams, unique_in_order


class KvListParams(SourceParams):
    """`list`: an id-list feature of a view keyed by the request (the member). A table version older than
    the view's `max_age_s` is stale: the source fails (fail it open in the workflow)."""

    list: str = Field(min_length=1)


class KvListRetriever:
    def __init__(self, step: str, params: KvListParams, services: Services) -> None:
        (feature,) = resolve_features(services, [params.list], step=step)
        if not isinstance(feature, ViewFeature) or not feature.is_ids:
            raise ValueError(f"step {step!r}: list {params.list!r} must be a stored id-list feature")
        if services.registry.entities[feature.view.entity].key != "request":
            raise ValueError(f"step {step!r}: list {params.list!r} must belong to a view keyed by the request")
        self._step = step
        self._feature = feature
        self._row_key = member_rows_key(feature.view.name)
        self.reads: frozenset[Key[Any]] = frozenset({self._row_key, TABLE_VERSIONS})
        self.tables: frozenset[str] = frozenset({feature.view.table})
        self._store = services.stores[feature.view.store]
        self._max_age_s = feature.view.max_age_s
        self._wall_clock = services.wall_clock
        self._created: dict[str, float] = {}  # table version -> its creation time, epoch seconds

    async def retrieve(self, ctx: Context, *, limit: int) -> I64:
        table = self._feature.view.table
        version = pinned_versions(ctx, (table,), step=self._step)[table]
        if self._max_age_s is not None:
            await self._check_age(version, ctx.budget.remaining_s())
        start = self._feature.start
        row = ctx.get(self._row_key)[0, start : start + self._feature.width]
        return unique_in_order(np.asarray(row, dtype=np.int64), limit)

    async def _check_age(self, version: str, timeout_s: float | None) -> None:
        created = self._created.get(version)
        if created is None:
            info = await self._store.info(self._feature.view.table, version)
            created = datetime.fromisoformat(info.created_at).timestamp() if info.created_at else float("inf")
            self._created[version] = created
        age_s = self._wall_clock() - created
        assert self._max_age_s is not None
        if age_s > self._max_age_s:
            raise DependencyFailure(
                f"{self._feature.view.table}@{version} is {age_s / 3600:.1f} h old, over the view's "
                f"max_age_s {self._max_age_s:.0f}",
                step=self._step,
            )


def _build(name: str, params: KvListParams, services: Services) -> DeclaredSource:
    return DeclaredSource(name, params, services, KvListRetriever(name, params, services))


KV_LIST = StepType("source.kv_list", KvListParams, _build)


if TYPE_CHECKING:  # mypy proves the protocol is met, so drift fails CI rather than a workflow
    _conforms: type[Retriever] = KvListRetriever
