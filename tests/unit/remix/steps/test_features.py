from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from engines.fake import FakeModels
from kvstore.errors import StoreUnavailable
from remix.corpus import Corpus
from remix.failures import Category, DependencyFailure
from remix.feature_spec import EMBEDDING_TABLES, MEMBER_FEATURES
from remix.registry import StepRegistry
from remix.services import Services
from remix.step import Step
from remix.steps import MEMBER_DEFAULTED, MEMBER_EMBEDDING, TABLE_VERSIONS, builtin_step_types
from remix.steps import MEMBER_FEATURES as MEMBER_FEATURES_KEY

from .conftest import DIM, CountingStore, fill_store, make_ctx, run_steps

Build = Callable[..., Step]
TABLES = (*EMBEDDING_TABLES, "member_features")


async def test_resolves_versions_once_and_looks_up_the_member_at_them(build: Build, store: CountingStore) -> None:
    store.put_rows("member", "v2", {2: [9, 9, 9, 9]}, dim=DIM)  # newer member table, current
    ctx = await run_steps(make_ctx(member_id=2, budget_s=0.25), build("rewrite"), build("features"))

    assert store.version_calls == [TABLES]
    versions = {table: "v1" for table in TABLES} | {"member": "v2"}
    assert dict(ctx.get(TABLE_VERSIONS)) == versions
    assert ctx.table_versions == versions
    assert [(c.table, c.ids.tolist(), c.version, c.timeout_s) for c in store.lookups] == [
        ("member", [2], "v2", 0.25),
        ("member_features", [2], "v1", 0.25),
    ]
    np.testing.assert_array_equal(ctx.get(MEMBER_EMBEDDING), [9, 9, 9, 9])
    np.testing.assert_array_equal(ctx.get(MEMBER_FEATURES_KEY), np.full(len(MEMBER_FEATURES), 0.2, np.float32))
    assert ctx.get(MEMBER_EMBEDDING).dtype == np.float32
    assert ctx.get(MEMBER_DEFAULTED) == frozenset()


@pytest.mark.parametrize("member_id", [6, 10_000])  # known but without rows; beyond the corpus
async def test_member_without_rows_gets_zero_defaults(build: Build, member_id: int) -> None:
    ctx = await run_steps(make_ctx(member_id=member_id), build("rewrite"), build("features"))
    np.testing.assert_array_equal(ctx.get(MEMBER_EMBEDDING), np.zeros(DIM))
    np.testing.assert_array_equal(ctx.get(MEMBER_FEATURES_KEY), np.zeros(len(MEMBER_FEATURES)))
    assert ctx.get(MEMBER_DEFAULTED) == {"member", "member_features"}
    assert not ctx.degraded  # a cold start is not a failure


class PartialVersions(CountingStore):
    """A store answering `current_versions` without some tables (instead of raising)."""

    async def current_versions(self, tables: Sequence[str]) -> dict[str, str]:
        return {t: v for t, v in (await super().current_versions(tables)).items() if t != "hashtag"}


async def test_table_without_current_version_is_a_dependency_failure(corpus: Corpus, models: FakeModels) -> None:
    store = PartialVersions()
    fill_store(store)
    await store.start()
    registry = StepRegistry(builtin_step_types())
    services = Services(models=models, store=store, corpus=corpus, clock=time.monotonic)
    steps = [registry.get(t).build(t, registry.get(t).params(), services) for t in ("rewrite", "features")]
    with pytest.raises(DependencyFailure, match=r"no current version of \['hashtag'\]") as caught:
        await run_steps(make_ctx(), *steps)
    assert caught.value.category is Category.DEPENDENCY


async def test_store_errors_propagate_unchanged(build: Build, store: CountingStore) -> None:
    store.fail_with(StoreUnavailable("connection refused", store="memory"), table="member_features")
    with pytest.raises(StoreUnavailable):
        await run_steps(make_ctx(), build("rewrite"), build("features"))


async def test_feature_row_of_the_wrong_width_is_a_dependency_failure(build: Build, store: CountingStore) -> None:
    store.put_rows("member_features", "v9", {1: [1.0, 2.0]}, dim=2)
    with pytest.raises(DependencyFailure, match=r"member_features@v9 rows have shape \(2,\)"):
        await run_steps(make_ctx(), build("rewrite"), build("features"))
