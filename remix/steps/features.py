"""`features`: pins the request's table versions and reads the member's rows of the declared views."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from features import StoreReader
from features.assembly import default_row, read_views
from features.declarations import KEY_REQUEST, ViewDecl
from features.errors import nearest
from remix.context import Context
from remix.failures import DependencyFailure
from remix.keys import Key
from remix.registry import StepParams, StepType
from remix.steps.keys import MEMBER_DEFAULTED, QUERY, TABLE_VERSIONS, member_rows_key
from remix.steps.services import DEFAULT_STORE, Services
from remix.tables import TableResolver


class FeaturesParams(StepParams):
    """`views`: the views keyed by the request (the member) to read, once per request; later steps
    reading a member feature need its view here (checked when the workflow is built)."""

    views: list[str] = Field(default_factory=list)


def _member_views(name: str, params: FeaturesParams, services: Services) -> list[ViewDecl]:
    views = []
    registry = services.registry
    for view_name in params.views:
        view = registry.views.get(view_name)
        if view is None:
            raise ValueError(f"step {name!r}: unknown view {view_name!r}{nearest(view_name, registry.views)}")
        if registry.entities[view.entity].key != KEY_REQUEST:
            raise ValueError(f"step {name!r}: view {view_name!r} is keyed by {view.entity!r}, not by the request")
        views.append(view)
    return views


class Features:
    """Reads QUERY; writes TABLE_VERSIONS (also copied into `ctx.table_versions`), `member_rows_key(view)`
    per configured view ((1, width), declared defaults where the member has no row) and MEMBER_DEFAULTED.

    The current version of every table the workflow reads (`remix.tables`; every declared table when a
    reader does not say) is resolved here, once, per store, and the request's release pins
    (`ctx.serving.table_pins`) override it; later steps read at those versions only, so one
    request never mixes two versions of a table, nor two releases. A member without a row (a cold
    start) is not a failure. A table with no current version, or any store error, is a DependencyFailure:
    the workflow decides with a fallback (`features.defaults`) whether the request goes on without it.
    """

    optional_reads: frozenset[Key[Any]] = frozenset()
    reads: frozenset[Key[Any]] = frozenset({QUERY})
    versions_key: Key[Any] = TABLE_VERSIONS

    def __init__(self, name: str, params: FeaturesParams, services: Services) -> None:
        self.name = name
        self._views = _member_views(name, params, services)
        self._stores = services.stores
        self._store_of = services.registry.table_stores
        # Until the workflow is built and `resolve_only` says what its steps read: every declared table.
        self._resolve(frozenset(self._store_of))
        self.writes: frozenset[Key[Any]] = frozenset(
            {TABLE_VERSIONS, MEMBER_DEFAULTED, *(member_rows_key(v.name) for v in self._views)}
        )

    def resolve_only(self, tables: frozenset[str]) -> None:
        """Resolve `tables` (those the workflow's steps read) and this step's own views' tables only."""
        self._resolve(tables | {view.table for view in self._views})

    def _resolve(self, tables: frozenset[str]) -> None:
        by_store: dict[str, list[str]] = {}
        for table in sorted(tables):  # a table no view declares (an ANN source's) is the default store's
            by_store.setdefault(self._store_of.get(table, DEFAULT_STORE), []).append(table)
        self._tables = by_store
        self._all_tables = tables

    async def __call__(self, ctx: Context) -> None:
        resolved = [await self._stores[store].current_versions(tables) for store, tables in self._tables.items()]
        versions: dict[str, str] = {}
        for found in resolved:
            versions.update(found)
        pins = ctx.serving.table_pins
        if pins:
            versions.update((table, version) for table, version in pins.items() if table in self._all_tables)
        missing = sorted(t for tables in self._tables.values() for t in tables if t not in versions)
        if missing:
            raise DependencyFailure(f"no current version of tables {missing}", step=self.name)
        ctx.table_versions.update(versions)
        ctx.set(TABLE_VERSIONS, MappingProxyType(versions))

        reader = StoreReader(self._stores, versions, timeout_s=ctx.budget.remaining_s())
        member = np.array([ctx.get(QUERY).member_id], dtype=np.int64)
        rows = await read_views(reader, self._views, member)
        for view, row in zip(self._views, rows, strict=True):
            ctx.set(member_rows_key(view.name), row)
        ctx.set(MEMBER_DEFAULTED, frozenset(reader.missing))


class FeaturesDefaults:
    """Fallback for `features` when the store fails: the request goes on without it, degraded.

    Writes what `features` writes without reading the store: TABLE_VERSIONS empty (so a later step that
    needs the store fails over to its own fallback), every configured view's declared default row, and
    every view in MEMBER_DEFAULTED.
    """

    reads: frozenset[Key[Any]] = frozenset()
    optional_reads: frozenset[Key[Any]] = frozenset()

    def __init__(self, name: str, params: FeaturesParams, services: Services) -> None:
        self.name = name
        self._views = _member_views(name, params, services)
        self._rows = {view.name: default_row(view).reshape(1, -1) for view in self._views}
        self.writes: frozenset[Key[Any]] = frozenset(
            {TABLE_VERSIONS, MEMBER_DEFAULTED, *(member_rows_key(v.name) for v in self._views)}
        )

    async def __call__(self, ctx: Context) -> None:
        ctx.set(TABLE_VERSIONS, MappingProxyType({}))
        for view, row in self._rows.items():
            ctx.set(member_rows_key(view), row.copy())
        ctx.set(MEMBER_DEFAULTED, frozenset(self._rows))


FEATURES = StepType("features", FeaturesParams, Features)
FEATURES_DEFAULTS = StepType("features.defaults", FeaturesParams, FeaturesDefaults)


if TYPE_CHECKING:  # mypy proves `features` is what `remix.tables` binds, so drift fails CI, not a workflow
    _resolves: type[TableResolver] = Features
