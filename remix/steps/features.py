"""`features`: pins the request's table versions and fetches the member's embedding and feature row."""

from __future__ import annotations

import asyncio
from types import MappingProxyType
from typing import Any

import numpy as np

from kvstore.base import EmbeddingStore
from remix import feature_spec
from remix.context import Context
from remix.failures import DependencyFailure
from remix.keys import Key
from remix.registry import StepParams, StepType
from remix.services import Services
from remix.steps.keys import MEMBER_DEFAULTED, MEMBER_EMBEDDING, MEMBER_FEATURES, QUERY, TABLE_VERSIONS

MEMBER_TABLE = "member"
MEMBER_FEATURES_TABLE = "member_features"
TABLES: tuple[str, ...] = (*feature_spec.EMBEDDING_TABLES, MEMBER_FEATURES_TABLE)


class FeaturesParams(StepParams):
    """No parameters: the tables are those of `remix.feature_spec`."""


class Features:
    """Reads QUERY; writes TABLE_VERSIONS (also copied into `ctx.table_versions`), MEMBER_EMBEDDING,
    MEMBER_FEATURES and MEMBER_DEFAULTED.

    Current versions of every table the request reads (EMBEDDING_TABLES and 'member_features') are
    resolved once, here; later steps look up at those versions only, so one request never mixes two
    versions of a table. A member without a row (a cold start, including ids beyond the corpus) gets
    zeros and the table's name in MEMBER_DEFAULTED: that is not a failure. A table with no current
    version, or a feature row of the wrong width, is a DependencyFailure.
    """

    reads: frozenset[Key[Any]] = frozenset({QUERY})
    optional_reads: frozenset[Key[Any]] = frozenset()
    writes: frozenset[Key[Any]] = frozenset({TABLE_VERSIONS, MEMBER_EMBEDDING, MEMBER_FEATURES, MEMBER_DEFAULTED})

    def __init__(self, name: str, params: FeaturesParams, services: Services) -> None:
        self.name = name
        self._store: EmbeddingStore = services.store

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
        # Zeros explicitly: the store promises zero rows for missing ids, the ranker's cold-start default
        # must not depend on that.
        ctx.set(MEMBER_EMBEDDING, np.where(embedding.found[0], embedding.vectors[0], 0.0).astype(np.float32))
        ctx.set(MEMBER_FEATURES, np.where(features.found[0], features.vectors[0], 0.0).astype(np.float32))
        ctx.set(MEMBER_DEFAULTED, defaulted)


FEATURES = StepType("features", FeaturesParams, Features)
