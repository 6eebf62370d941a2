"""`features` and `features.defaults`: one version per table per request, the member's declared rows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from kvstore.errors import StoreUnavailable, TableNotFound
from remix.compose import Sequence
from remix.context import Context
from remix.step import Step
from remix.steps import MEMBER_DEFAULTED, TABLE_VERSIONS, member_rows_key, source_key
from remix.testing import FuncStep
from remix.workflow import Workflow

from .conftest import MEMBER_VIEWS, SOURCE, CountingStore, make_ctx, run_steps

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


def network_workflow(build: Build, *extra: Step) -> Workflow:
    """features, then a source reading the network list and scoring it: the tables those two read."""
    steps = [
        build("rewrite"),
        build("features", views=list(MEMBER_VIEWS)),
        build("source.kv_list", name="network", list="network_feed.items", limit=6, retrieve=6, **SOURCE),
        *extra,
    ]
    return Workflow(name="wf", version="1", root=Sequence("wf", steps))


async def test_a_built_workflow_resolves_only_the_tables_its_steps_read(build: Build, store: CountingStore) -> None:
    workflow = network_workflow(build)
    store._current.pop("trending")  # a table no step of this workflow reads: its absence is not this one's failure
    ctx = make_ctx(member_id=3)
    await workflow.root(ctx)

    versions = ctx.get(TABLE_VERSIONS)
    member_tables = {"member", "member_features", "member_topics", "member_graph", "network_feed"}
    first_pass_tables = {"item_meta", "item_stats"}  # the first-pass model's features and the source's own
    assert set(versions) == member_tables | first_pass_tables
    assert len(ctx.get(source_key("network"))) > 0


async def test_a_reader_of_the_versions_that_does_not_say_which_keeps_every_table(
    build: Build, store: CountingStore
) -> None:
    async def reads_versions(ctx: Context) -> None:
        ctx.get(TABLE_VERSIONS)

    workflow = network_workflow(build, FuncStep("custom", reads_versions, reads=[TABLE_VERSIONS]))
    ctx = make_ctx(member_id=3)
    await workflow.root(ctx)
    assert {"trending", "job_topics"} <= set(ctx.get(TABLE_VERSIONS))
