"""A whole workflow declared in YAML over the test product: sources, merge, filter, rank, blend."""

from __future__ import annotations

import pytest

from kvstore.errors import StoreUnavailable
from remix import WorkflowConfigError, parse_workflow, run_workflow
from remix.registry import StepRegistry
from remix.request import FeedRequest
from remix.steps import FEED, builtin_step_types
from remix.steps.services import Services
from remix.trace import Outcome

from .conftest import CountingStore, FakeRemote

WORKFLOW = """
workflow: feed
version: "1"
timeout_s: 1.0
steps:
  - type: rewrite
  - type: features
    views: &views [member_embedding, member_profile, member_topics, member_graph, network_feed]
    fallback: {type: features.defaults, views: *views}
  - parallel:
      name: sources
      branches:
        - {type: source.kv_list, name: network, list: network_feed.items, model: first_pass, fail_open: true,
           item_type: item_meta.type, author: item_meta.author_id, limit: 5, retrieve: 6}
        - {type: source.grpc, name: pymk, service: remote, model: first_pass, fail_open: true,
           item_type: item_meta.type, author: item_meta.author_id, limit: 5, retrieve: 6}
  - {type: merge, sources: [network, pymk], max_candidates: 10}
  - type: filter
    rules: [{name: connections_only, feature: author_is_connection, op: eq, value: 0.0}]
  - type: rank
    model: feed_ranker
    candidates: filtered
    weights: {click: 1.0}
    fallback: {type: rank, name: rank_whole, model: feed_ranker_whole, candidates: filtered, weights: {click: 1.0}}
  - {type: blend, max_per_author: 1}
"""


def parse(services: Services, text: str = WORKFLOW):  # type: ignore[no-untyped-def]
    return parse_workflow(text, "workflows/feed.yaml", StepRegistry(builtin_step_types()), services, answer=FEED)


async def test_the_declared_workflow_ranks_a_feed(services: Services, remote: FakeRemote) -> None:
    ctx = await run_workflow(parse(services), FeedRequest(request_id="r", member_id=1, count=10), timeout_s=1.0)
    feed = ctx.get(FEED)
    assert not ctx.degraded
    # network list of member 1: 4, 2, 9, 7; remote: 5, 6, 7. Filter keeps authors 2 and 3 (connections).
    assert set(feed.item_id) <= {2, 7, 6, 3, 12, 17}
    assert set((feed.author_id).tolist()) <= {2, 3}
    assert len(set(feed.author_id.tolist())) == len(feed)  # one item per author
    assert ctx.trace.by_name("filter").detail.startswith("dropped")
    assert remote.calls is not None
    assert remote.calls[0]["source"] == "pymk"


async def test_without_the_store_the_answer_is_degraded_not_failed(services: Services, store: CountingStore) -> None:
    store.fail_with(StoreUnavailable("down", store="memory"))
    ctx = await run_workflow(parse(services), FeedRequest(request_id="r", member_id=1, count=10), timeout_s=1.0)
    assert ctx.degraded
    assert ctx.trace.by_name("features").outcome is Outcome.FELL_BACK
    assert ctx.trace.by_name("network").outcome is Outcome.FAILED_OPEN


def test_a_step_reading_a_member_view_the_features_step_does_not_read_fails_at_build(services: Services) -> None:
    text = WORKFLOW.replace("member_graph, network_feed]", "network_feed]")
    with pytest.raises(WorkflowConfigError, match=r"reads 'member.member_graph', but no earlier step writes it"):
        parse(services, text)


def test_a_merge_of_an_unknown_source_fails_at_build(services: Services) -> None:
    with pytest.raises(WorkflowConfigError, match=r"optionally reads 'candidates.nope', but no earlier step writes it"):
        parse(services, WORKFLOW.replace("sources: [network, pymk]", "sources: [network, nope]"))


def test_an_unknown_feature_in_a_workflow_fails_at_build_with_file_key_path_and_nearest(services: Services) -> None:
    with pytest.raises(WorkflowConfigError) as caught:
        parse(services, WORKFLOW.replace("list: network_feed.items", "list: network_feed.itmes"))
    message = str(caught.value)
    assert message.startswith("workflows/feed.yaml: steps[2].parallel.branches[0]")
    assert "unknown feature 'network_feed.itmes' (nearest: network_feed.items" in message
