"""Declared inputs of a step: a compiled `InputPlan` plus how a request reads it (pinned versions, the
member's rows already read by `features`, the remaining budget). Shared by sources, filters and rank."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from features import Frame, InputPlan, StoreReader
from features.errors import nearest
from features.registry import Feature
from features.signature import ModelSignature
from remix.context import Context
from remix.failures import DependencyFailure
from remix.keys import Key
from remix.steps.keys import QUERY, TABLE_VERSIONS, member_rows_key
from remix.steps.services import Services

I64 = npt.NDArray[np.int64]


def resolve_features(services: Services, names: Iterable[str], *, step: str) -> list[Feature]:
    """Registry features by name; ValueError naming the step and the nearest names (a build-time error)."""
    resolved = []
    for name in names:
        try:
            resolved.append(services.registry.feature(name))
        except KeyError:
            raise ValueError(
                f"step {step!r}: unknown feature {name!r}{nearest(name, services.registry.names())}"
            ) from None
    return resolved


def pinned_versions(ctx: Context, tables: Iterable[str], *, step: str) -> Mapping[str, str]:
    """The request's table versions (`features` resolved them), all of `tables` among them; a table without
    one (the `features` step fell back: the store failed) is a DependencyFailure naming it."""
    versions = ctx.get(TABLE_VERSIONS)
    unresolved = sorted(set(tables) - versions.keys())
    if unresolved:
        raise DependencyFailure(f"no table version was resolved for {unresolved} (the store failed)", step=step)
    return versions


class DeclaredInputs:
    """What one step reads per request for its declared features. `reads` are the keys it needs: QUERY,
    TABLE_VERSIONS and the member rows of every request-keyed view in the plan (so a workflow whose
    `features` step does not read a view this step needs fails at build, naming the view)."""

    def __init__(self, services: Services, features: Iterable[Feature], *, step: str) -> None:
        self.step = step
        self.plan = InputPlan(services.registry, features)
        self._member_views = self.plan.member_views()
        self.tables = frozenset(view.table for view in self.plan.views)
        self.reads: frozenset[Key[Any]] = frozenset(
            {QUERY, TABLE_VERSIONS, *(member_rows_key(v.name) for v in self._member_views)}
        )
        self._stores = services.stores
        self._wall_clock = services.wall_clock

    async def frame(
        self,
        ctx: Context,
        candidate_ids: I64,
        columns: Mapping[str, npt.NDArray[Any]] | None = None,
        precomputed: Mapping[str, npt.NDArray[Any]] | None = None,
    ) -> tuple[Frame, dict[str, int]]:
        """The plan's features for `candidate_ids`, and the rows missing per view (declared defaults used).

        A table without a resolved version (the `features` step fell back) or any store error is a
        dependency failure: the workflow's fallback or fail-open policy decides."""
        versions = pinned_versions(ctx, self.tables, step=self.step)
        reader = StoreReader(self._stores, versions, timeout_s=ctx.budget.remaining_s())
        known = {view.name: ctx.get(member_rows_key(view.name)) for view in self._member_views}
        frame = await self.plan.frame(
            reader,
            member_ids=np.array([ctx.get(QUERY).member_id], dtype=np.int64),
            candidate_ids=candidate_ids,
            columns=columns,
            known=known,
            precomputed=precomputed,
            now_s=self._wall_clock(),
        )
        return frame, reader.missing


def signature_inputs(services: Services, signature: ModelSignature, *, step: str) -> DeclaredInputs:
    return DeclaredInputs(services, (f for tensor in signature.inputs for f in tensor.features), step=step)
