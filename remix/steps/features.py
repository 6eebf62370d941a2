"""`features`: pins the request's table versions and fetches the member's embedding and feature row."""

from __future__ import annotations

import asyncio
from types import MappingProxyType
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from kvstore.base import EmbeddingStore
from remix import feature_spec
from remix.context import Context
from remix.failures import DependencyFailure
from remix.keys import Key
from remix.registry import StepParams, StepType
from remix.services import Services
from remix.steps._defaults import check_defaults, with_defaults
from remix.steps.keys import MEMBER_DEFAULTED, MEMBER_EMBEDDING, MEMBER_FEATURES, QUERY, TABLE_VERSIONS

MEMBER_TABLE = "member"
MEMBER_FEATURES_TABLE = "member_features"
TABLES: tuple[str, ...] = (*feature_spec.EMBEDDING_TABLES, MEMBER_FEATURES_TABLE)


class FeaturesParams(StepParams):
    """The tables are those of `remix.feature_spec`. `defaults`: table ('member', 'member_features') -> the
    vector a member without a row gets (zeros when not configured)."""

    defaults: dict[str, list[float]] = Field(default_factory=dict)

    @field_validator("defaults")
    @classmethod
    def _member_tables(cls, defaults: dict[str, list[float]]) -> dict[str, list[float]]:
        return check_defaults(defaults, (MEMBER_TABLE, MEMBER_FEATURES_TABLE))


class Features:
    """Reads QUERY; writes TABLE_VERSIONS (also copied into `ctx.table_versions`), MEMBER_EMBEDDING,
    MEMBER_FEATURES and MEMBER_DEFAULTED.

    Current versions of every table the request reads (EMBEDDING_TABLES and 'member_features') are
    resolved once, here; later steps look up at those versions only, so one request never mixes two
    versions of a table. A member without a row (a cold start, including ids beyond the corpus) gets
    the table's configured default (zeros) and the table's name in MEMBER_DEFAULTED: that is not a
    failure. A table with no current version, or a feature row of the wrong width, is a DependencyFailure;
    so is any store error (unreachable, timeout, a version the model's pins refuse): the workflow decides
    with a fallback (`features.defaults`) whether the request goes on without the store.
    """

    reads: frozenset[Key[Any]] = frozenset({QUERY})
    optional_reads: frozenset[Key[Any]] = frozenset()
    writes: frozenset[Key[Any]] = frozenset({TABLE_VERSIONS, MEMBER_EMBEDDING, MEMBER_FEATURES, MEMBER_DEFAULTED})

    def __init__(self, name: str, params: FeaturesParams, services: Services) -> None:
        self.name = name
        self._store: EmbeddingStore = services.store
        self._defaults = params.defaults

    async def __call__(self, ctx: Context) -> None:
        store = self._store
        versions = dict(await store.current_versions(TABLES))
        missing = [table for table in TABLES if table not in versions]
        if missing:
            raise DependencyFailure(f"store {store.name!r} has no current version of {missing}", step=self.name)
        ctx.table_versions.update(versions)
        ctx.set(TABLE_VERSIONS, MappingProxyType(versions))

        member = np.array([ctx.get(QUERY).member_id], dtype=np.int64)
        timeout_s = ctx.budget.remaining_s()
        embedding, features = await asyncio.gather(
            store.lookup(MEMBER_TABLE, member, version=versions[MEMBER_TABLE], timeout_s=timeout_s),
            store.lookup(MEMBER_FEATURES_TABLE, member, version=versions[MEMBER_FEATURES_TABLE], timeout_s=timeout_s),
        )
        if features.vectors.shape != (1, len(feature_spec.MEMBER_FEATURES)):
            raise DependencyFailure(
                f"{MEMBER_FEATURES_TABLE}@{features.version} rows have shape {features.vectors.shape[1:]}, "
                f"expected ({len(feature_spec.MEMBER_FEATURES)},)",
                step=self.name,
            )
        defaulted = frozenset(
            table
            for table, lookup in ((MEMBER_TABLE, embedding), (MEMBER_FEATURES_TABLE, features))
            if not lookup.found[0]
        )
        for key, table, lookup in (
            (MEMBER_EMBEDDING, MEMBER_TABLE, embedding),
            (MEMBER_FEATURES, MEMBER_FEATURES_TABLE, features),
        ):
            row = with_defaults(lookup, self._defaults.get(table), table=table, step=self.name)[0]
            ctx.set(key, np.array(row, dtype=np.float32))
        ctx.set(MEMBER_DEFAULTED, defaulted)


class FeaturesDefaults:
    """Fallback for `features` when the store fails: the request goes on without it, degraded.

    Writes what `features` writes, without reading the store: TABLE_VERSIONS empty (no version was
    resolved, so a later step that needs the store, such as `rank`, fails over to its own fallback),
    MEMBER_FEATURES the configured 'member_features' default (zeros), MEMBER_EMBEDDING the configured
    'member' default (an empty vector when none: its dim is not known without the store), and both tables
    in MEMBER_DEFAULTED.
    """

    reads: frozenset[Key[Any]] = frozenset()
    optional_reads: frozenset[Key[Any]] = frozenset()
    writes: frozenset[Key[Any]] = Features.writes

    def __init__(self, name: str, params: FeaturesParams, services: Services) -> None:
        self.name = name
        self._member = np.asarray(params.defaults.get(MEMBER_TABLE, []), dtype=np.float32)
        default = params.defaults.get(MEMBER_FEATURES_TABLE)
        self._features = (
            np.zeros(len(feature_spec.MEMBER_FEATURES), np.float32)
            if default is None
            else np.asarray(default, dtype=np.float32)
        )
        if self._features.shape != (len(feature_spec.MEMBER_FEATURES),):
            raise ValueError(
                f"the {MEMBER_FEATURES_TABLE!r} default must have {len(feature_spec.MEMBER_FEATURES)} values"
            )

    async def __call__(self, ctx: Context) -> None:
        ctx.set(TABLE_VERSIONS, MappingProxyType({}))
        ctx.set(MEMBER_EMBEDDING, self._member.copy())
        ctx.set(MEMBER_FEATURES, self._features.copy())
        ctx.set(MEMBER_DEFAULTED, frozenset({MEMBER_TABLE, MEMBER_FEATURES_TABLE}))


FEATURES = StepType("features", FeaturesParams, Features)
FEATURES_DEFAULTS = StepType("features.defaults", FeaturesParams, FeaturesDefaults)
