"""`features` and `features.defaults`: one version per table per request, the member's declared rows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from kvstore.errors import StoreUnavailable, TableNotFound
from remix.step import Step
from remix.steps import MEMBER_DEFAULTED, TABLE_VERSIONS, member_rows_key

from .conftest import MEMBER_VIEWS, CountingStore, make_ctx, run_steps

Build = Callable[..., Step]


async def test_pins_every_declared_table_once_and_reads_the_members_rows(build: Build, store: CountingStore) -> None:
    ctx = await run_steps(make_ctx(member_id=3), build("rewrite"), build("features", views=list(MEMBER_VIEWS)))
    versions = ctx.get(TABLE_VERSIONS)
    assert set(versions) == {
        "member",
        "member_features",
        "member_topics",
        "member_graph",
        "network_feed",
        "item_meta",
        "item_stats",
        "item",
        "job_topics",
        "author",
        "hashtag",
        "trending",
    }
    assert ctx.table_versions == dict(versions)
    np.testing.assert_array_equal(ctx.get(member_rows_key("member_graph")), [[1, 4, 5]])
    np.testing.assert_allclose(ctx.get(member_rows_key("member_profile")), [[0.3]])
    assert ctx.get(MEMBER_DEFAULTED) == frozenset()
    # one bulk read per view, of one id
    assert sorted(call.table for call in store.lookups) == sorted(
        ["member", "member_features", "member_topics", "member_graph", "network_feed"]
    )


async def test_a_cold_start_gets_the_declared_defaults(build: Build) -> None:
    ctx = await run_steps(make_ctx(member_id=6), build("rewrite"), build("features", views=list(MEMBER_VIEWS)))
    np.testing.assert_allclose(ctx.get(member_rows_key("member_profile")), [[0.5]])  # declared default 0.5
    np.testing.assert_array_equal(ctx.get(member_rows_key("network_feed")), [[-1] * 6])
    assert ctx.get(MEMBER_DEFAULTED) == frozenset(MEMBER_VIEWS)


async def test_a_table_without_a_current_version_fails_the_step(build: Build, store: CountingStore) -> None:
    store._current.pop("trending")
    with pytest.raises(TableNotFound, match="trending"):
        await run_steps(make_ctx(), build("rewrite"), build("features", views=["member_profile"]))


async def test_store_errors_propagate_for_the_workflow_to_handle(build: Build, store: CountingStore) -> None:
    store.fail_with(StoreUnavailable("down", store="memory"))
    with pytest.raises(StoreUnavailable):
        await run_steps(make_ctx(), build("rewrite"), build("features", views=["member_profile"]))


async def test_defaults_fallback_writes_the_same_keys_without_the_store(build: Build, store: CountingStore) -> None:
    primary, fallback = (
        build("features", views=list(MEMBER_VIEWS)),
        build("features.defaults", views=list(MEMBER_VIEWS)),
    )
    assert fallback.writes == primary.writes
    ctx = await run_steps(make_ctx(), build("rewrite"), fallback)
    assert ctx.get(TABLE_VERSIONS) == {}
    np.testing.assert_allclose(ctx.get(member_rows_key("member_profile")), [[0.5]])
    assert ctx.get(MEMBER_DEFAULTED) == frozenset(MEMBER_VIEWS)
    assert store.lookups == []


@pytest.mark.parametrize(
    ("views", "message"),
    [
        (["member_profle"], r"unknown view 'member_profle' \(nearest: member_profile"),
        (["item_stats"], r"view 'item_stats' is keyed by 'item', not by the request"),
    ],
)
def test_bad_views_fail_at_build(build: Build, views: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build("features", views=views)
