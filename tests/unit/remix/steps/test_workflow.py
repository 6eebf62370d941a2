"""The built-in step types and the default feed workflow, composed with the real remix wrappers."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from engines.errors import EngineUnavailable
from engines.fake import FakeModels
from remix.context import Context
from remix.dsl import load_workflow, parse_workflow
from remix.executor import run_workflow
from remix.registry import StepRegistry
from remix.request import FeedRequest
from remix.services import Services
from remix.step import Step
from remix.steps import EXPERIMENT_BUCKET, FEED, MERGED, RANKED, builtin_step_types, experiment_bucket
from remix.trace import Outcome
from remix.workflow import Workflow

FEED_YAML = Path(str(resources.files("remix") / "workflows" / "feed.yaml"))


def test_builtin_step_types() -> None:
    names = [t.type_name for t in builtin_step_types()]
    assert names == [
        "rewrite",
        "features",
        "features.defaults",
        "source.network",
        "source.jobs",
        "source.trending",
        "source.hashtags",
        "merge",
        "rank",
        "rank.whole_model",
        "rank.first_pass_order",
        "blend",
    ]
    StepRegistry(builtin_step_types())  # no duplicates


@pytest.mark.parametrize("step_type", builtin_step_types(), ids=lambda t: t.type_name)
def test_every_step_builds_and_satisfies_the_protocol(step_type: Any, services: Services) -> None:
    params = step_type.params(sources=["a"]) if step_type.type_name == "merge" else step_type.params()
    step = step_type.build("x", params, services)
    assert isinstance(step, Step)
    assert step.name == "x"
    assert not (step.reads & step.optional_reads)


# --- feed.yaml, loaded by the real DSL ------------------------------------------------------------------------


def load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(FEED_YAML.read_text())
    return spec


def build_workflow(spec: dict[str, Any], services: Services) -> Workflow:
    registry = StepRegistry(builtin_step_types())
    return parse_workflow(yaml.safe_dump(spec, sort_keys=False), "feed-variant.yaml", registry, services)


def test_feed_yaml_ships_as_package_data_and_loads(services: Services) -> None:
    workflow = load_workflow(FEED_YAML, StepRegistry(builtin_step_types()), services)
    assert (workflow.name, workflow.version, workflow.default_timeout_s) == ("feed", "2026.11.1", 0.5)


def source_branches(spec: dict[str, Any]) -> list[dict[str, Any]]:
    [parallel] = [n["parallel"] for n in spec["steps"] if "parallel" in n]
    branches: list[dict[str, Any]] = parallel["branches"]
    return branches


def test_feed_yaml_is_consistent() -> None:
    spec = load_spec()
    assert (spec["workflow"], spec["timeout_s"]) == ("feed", 0.5)
    branches = source_branches(spec)
    assert all(b["fail_open"] and b["type"].startswith("source.") for b in branches)
    [merge] = [n for n in spec["steps"] if n.get("type") == "merge"]
    assert sorted(merge["sources"]) == sorted(b["name"] for b in branches)
    assert merge["max_candidates"] >= 500
    [rank] = [n for n in spec["steps"] if n.get("type") == "rank"]
    # Without the store: the whole model (its own tables), then first-pass order; the same utility weights.
    assert rank["fallback"]["type"] == "rank.whole_model"
    assert rank["fallback"]["weights"] == rank["weights"]
    assert rank["fallback"]["fallback"] == {"type": "rank.first_pass_order"}
    [features] = [n for n in spec["steps"] if n.get("type") == "features"]
    assert features["fallback"] == {"type": "features.defaults"}


async def run_feed(services: Services, spec: dict[str, Any] | None = None, member: int = 1, count: int = 6) -> Context:
    workflow = build_workflow(spec or load_spec(), services)  # validates the data flow
    return await run_workflow(workflow, FeedRequest("r1", member, count))


def assert_valid_feed(ctx: Context, count: int, max_per_author: int = 2) -> None:
    feed = ctx.get(FEED)
    assert 0 < len(feed) <= count
    assert np.all(np.diff(feed.utility) <= 0)
    assert np.bincount(feed.author_id).max() <= max_per_author
    assert len(np.unique(feed.item_id)) == len(feed)
    for row in range(len(feed)):
        assert feed.source_names[feed.source[row]] == feed.source_list(row)[0]


async def test_feed_workflow_end_to_end(services: Services) -> None:
    ctx = await run_feed(services)
    assert_valid_feed(ctx, 6)
    assert not ctx.degraded
    merged = ctx.get(MERGED)
    assert merged.source_names == ("network", "hashtags", "jobs", "trending")
    assert set(ctx.get(RANKED).objectives) == {"click", "comment", "share", "long_dwell"}
    assert sorted(use.model for use in ctx.models) == ["feed_ranker"] + ["first_pass"] * 4
    assert set(ctx.table_versions) == {"member", "item", "author", "hashtag", "member_features"}
    assert {entry.outcome for entry in ctx.trace.entries} == {Outcome.OK}


async def test_cold_start_member_is_served(services: Services) -> None:
    ctx = await run_feed(services, member=10_000)
    assert_valid_feed(ctx, 6)
    assert set(ctx.get(MERGED).source_list(0)) <= {"jobs", "trending"}


async def test_lost_source_degrades_the_answer(services: Services, models: FakeModels) -> None:
    spec = load_spec()
    [jobs] = [b for b in source_branches(spec) if b["name"] == "jobs"]
    jobs["model"] = "fpr_x"
    models.fail_with(EngineUnavailable("down", target="xgb"), model="fpr_x")
    ctx = await run_feed(services, spec)
    assert_valid_feed(ctx, 6)
    assert [f.reason for f in ctx.failures] == ["jobs: dependency"]
    merged = ctx.get(MERGED)
    assert not np.any(merged.sources_mask & (1 << merged.source_names.index("jobs")))


async def test_ranker_failure_falls_back_to_first_pass_order(services: Services, models: FakeModels) -> None:
    models.fail_with(EngineUnavailable("down", target="onnx"), model="feed_ranker")
    ctx = await run_feed(services)
    assert_valid_feed(ctx, 6)
    assert ctx.degraded
    assert ctx.trace.by_name("rank").outcome is Outcome.FELL_BACK
    feed = ctx.get(FEED)
    assert feed.scores is None
    np.testing.assert_array_equal(feed.utility, feed.first_pass_score)


SWITCH_YAML = """
workflow: feed_ab
version: "1"
steps:
  - type: rewrite
    buckets: [narrow, wide]
  - type: features
  - parallel:
      name: sources
      branches:
        - {type: source.trending, name: trending, fail_open: true}
        - {type: source.network, name: network, fail_open: true}
  - type: merge
    sources: [network, trending]
  - type: rank
  - switch:
      name: blend_by_bucket
      "on": slot.experiment_bucket  # quoted: YAML 1.1 reads a bare `on` as true
      cases:
        narrow: {type: blend, name: blend_narrow, max_per_author: 1}
        wide: {type: blend, name: blend_wide, max_per_author: 3}
"""


@pytest.mark.parametrize("member", [1, 2, 3, 4, 5])
async def test_a_workflow_can_switch_on_the_experiment_bucket(services: Services, member: int) -> None:
    workflow = parse_workflow(SWITCH_YAML, "ab.yaml", StepRegistry(builtin_step_types()), services)
    ctx = await run_workflow(workflow, FeedRequest("r1", member, 20))
    bucket = experiment_bucket(member, "feed", ("narrow", "wide"))
    assert ctx.get(EXPERIMENT_BUCKET) == bucket
    taken = "blend_narrow" if bucket == "narrow" else "blend_wide"
    assert ctx.trace.by_name(taken).outcome is Outcome.OK
    assert np.bincount(ctx.get(FEED).author_id).max() <= (1 if bucket == "narrow" else 3)
