"""The YAML DSL: a valid file gives a runnable workflow; every error names file, key path, expectation."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from remix.compose import Parallel, Sequence, Switch
from remix.context import Context
from remix.dsl import WorkflowConfigError, load_workflow, load_workflows, parse_workflow
from remix.executor import run_workflow
from remix.keys import Key
from remix.registry import StepParams, StepRegistry, StepType
from remix.testing import FuncStep, GateStep, make_request
from remix.trace import Outcome
from remix.workflow import Workflow
from remix.wrappers import Guarded

QUERY: Key[int] = Key("query", int)
BUCKET: Key[str] = Key("bucket", str)
MERGED: Key[tuple[str, ...]] = Key("merged", tuple)
RANKED: Key[str] = Key("ranked", str)
FEED: Key[str] = Key("feed", str)
SERVICES = None  # the test step types need no collaborators


def source_key(name: str) -> Key[str]:
    return Key(f"candidates.{name}", str)


class RewriteParams(StepParams):
    bucket: str = "a"


class SourceParams(StepParams):
    limit: int = 10
    broken: bool = False


class MergeParams(StepParams):
    sources: tuple[str, ...]


class RankParams(StepParams):
    broken: bool = False


class BlendParams(StepParams):
    max_per_author: int = 3


def _rewrite(name: str, params: RewriteParams, services: object) -> FuncStep:
    async def run(ctx: Context) -> None:
        ctx.set(QUERY, ctx.request.member_id)
        ctx.set(BUCKET, ctx.request.context.get("bucket", params.bucket))

    return FuncStep(name, run, writes=[QUERY, BUCKET])


def _source(name: str, params: SourceParams, services: object) -> FuncStep:
    async def run(ctx: Context) -> None:
        if params.broken:
            raise ConnectionError(f"{name} backend down")
        ctx.set(source_key(name), f"{name}x{params.limit}")

    return FuncStep(name, run, reads=[QUERY], writes=[source_key(name)])


def _merge(name: str, params: MergeParams, services: object) -> FuncStep:
    keys = [source_key(source) for source in params.sources]

    async def run(ctx: Context) -> None:
        ctx.set(MERGED, tuple(ctx.get(key) for key in keys if ctx.has(key)))

    return FuncStep(name, run, optional_reads=keys, writes=[MERGED])


def _rank(name: str, params: RankParams, services: object) -> FuncStep:
    async def run(ctx: Context) -> None:
        if params.broken:
            raise ConnectionError("ranker down")
        merged: tuple[str, ...] = ctx.get(MERGED)
        ctx.set(RANKED, f"ranked({'+'.join(merged)})")

    return FuncStep(name, run, reads=[MERGED], writes=[RANKED])


def _first_pass_order(name: str, params: StepParams, services: object) -> FuncStep:
    async def run(ctx: Context) -> None:
        merged: tuple[str, ...] = ctx.get(MERGED)
        ctx.set(RANKED, f"first_pass({'+'.join(merged)})")

    return FuncStep(name, run, reads=[MERGED], writes=[RANKED])


def _stuck(name: str, params: StepParams, services: object) -> GateStep:
    return GateStep(name, writes={RANKED: "never"})


def _blend(name: str, params: BlendParams, services: object) -> FuncStep:
    async def run(ctx: Context) -> None:
        ctx.set(FEED, f"{name}:{params.max_per_author}:{ctx.get(RANKED)}")

    return FuncStep(name, run, reads=[RANKED], writes=[FEED])


def registry() -> StepRegistry:
    return StepRegistry(
        [
            StepType("rewrite", RewriteParams, _rewrite),
            StepType("source", SourceParams, _source),
            StepType("merge", MergeParams, _merge),
            StepType("rank", RankParams, _rank),
            StepType("rank.first_pass_order", StepParams, _first_pass_order),
            StepType("stuck", StepParams, _stuck),
            StepType("blend", BlendParams, _blend),
        ]
    )


FEED_YAML = """
workflow: feed
version: "2026.11.1"
timeout_s: 5
description: the test feed
steps:
  - type: rewrite
  - parallel:
      name: sources
      branches:
        - {type: source, name: network, timeout_s: 1, fail_open: true, limit: 400}
        - {type: source, name: jobs, timeout_s: 1, fail_open: true, broken: true}
  - type: merge
    sources: [network, jobs]
  - sequence:
      name: ranking
      steps:
        - type: rank
          timeout_s: 1
          broken: true
          fallback: {type: rank.first_pass_order}
  - switch:
      name: blend_by_bucket
      on: slot.bucket
      cases:
        a: {type: blend, max_per_author: 2}
        b: {type: blend, max_per_author: 1}
      default: {type: blend}
"""


def parse(text: str, source: str = "workflows/feed.yaml") -> Workflow:
    return parse_workflow(textwrap.dedent(text), source, registry(), SERVICES)


def config_error(text: str, source: str = "workflows/feed.yaml") -> WorkflowConfigError:
    with pytest.raises(WorkflowConfigError) as caught:
        parse(text, source)
    return caught.value


def minimal(*steps: str) -> str:
    body = "\n".join(f"  - {step}" for step in steps)
    return f'workflow: feed\nversion: "1"\nsteps:\n{body}\n'


# --- a valid file -----------------------------------------------------------------------------------------


def test_valid_yaml_builds_the_declared_structure_and_policies() -> None:
    workflow = parse(FEED_YAML)
    assert (workflow.name, workflow.version, workflow.default_timeout_s) == ("feed", "2026.11.1", 5.0)
    assert workflow.description == "the test feed"
    assert isinstance(workflow.root, Guarded)
    root = workflow.root.inner
    assert isinstance(root, Sequence)
    assert [step.name for step in root.steps] == ["rewrite", "sources", "merge", "ranking", "blend_by_bucket"]
    sources = root.steps[1].inner
    assert isinstance(sources, Parallel)
    network = sources.branches[0]
    assert (network.policy.timeout_s, network.policy.fail_open) == (1.0, True)
    ranking = root.steps[3].inner
    assert isinstance(ranking, Sequence)
    rank = ranking.steps[0]
    assert rank.fallback is not None
    assert rank.fallback.name == "rank.first_pass_order"  # name defaults to the type
    assert isinstance(root.steps[4].inner, Switch)


@pytest.mark.parametrize(("bucket", "expected"), [("a", "blend:2"), ("b", "blend:1"), ("zz", "blend:3")])
async def test_valid_yaml_runs_degraded_through_fail_open_and_fallback(bucket: str, expected: str) -> None:
    workflow = parse(FEED_YAML)
    ctx = await run_workflow(workflow, make_request(member_id=7, context={"bucket": bucket}))

    assert ctx.get(FEED) == f"{expected}:first_pass(networkx400)"
    assert sorted(f.reason for f in ctx.failures) == ["jobs: dependency", "rank: dependency"]
    outcomes = {e.name: e.outcome for e in ctx.trace.entries if e.outcome is not Outcome.SKIPPED}
    assert outcomes["jobs"] is Outcome.FAILED_OPEN
    assert outcomes["rank"] is Outcome.FELL_BACK
    assert outcomes["feed"] is Outcome.OK


async def test_fallback_on_timeout_declared_in_yaml() -> None:
    workflow = parse(
        minimal(
            "{type: rewrite}",
            "{type: source, name: x}",
            "{type: merge, sources: [x]}",
            "{type: stuck, name: rank, timeout_s: 0.01, fallback: {type: rank.first_pass_order}}",
        )
    )
    ctx = await run_workflow(workflow, make_request())
    assert ctx.get(RANKED) == "first_pass(xx10)"
    assert ctx.trace.by_name("rank").outcome is Outcome.FELL_BACK
    assert [f.reason for f in ctx.failures] == ["rank: timeout"]


@pytest.mark.parametrize(
    ("on", "request_fields", "expected"),
    [
        ("request.context.surface", {"context": {"surface": "web"}}, "special"),
        ("request.context.surface", {}, "blend"),
        ("request.workflow", {"workflow": "web"}, "special"),
        ("request.workflow", {"workflow": "feed"}, "blend"),
    ],
)
async def test_switch_on_request_properties(on: str, request_fields: dict[str, Any], expected: str) -> None:
    switch = f"switch: {{name: s, on: {on}, cases: {{web: {{type: blend, name: special}}}}, default: {{type: blend}}}}"
    workflow = parse(
        minimal("{type: rewrite}", "{type: source, name: x}", "{type: merge, sources: [x]}", "{type: rank}", switch)
    )
    ctx = await run_workflow(workflow, make_request(**request_fields))
    assert ctx.get(FEED).startswith(f"{expected}:")


def test_load_workflows_reads_every_yaml_file_by_name(tmp_path: Path) -> None:
    (tmp_path / "feed.yaml").write_text(FEED_YAML)
    (tmp_path / "jobs.yaml").write_text(minimal("{type: rewrite}").replace("workflow: feed", "workflow: jobs_feed"))
    (tmp_path / "notes.txt").write_text("not a workflow")
    workflows = load_workflows(tmp_path, registry(), SERVICES)
    assert sorted(workflows) == ["feed", "jobs_feed"]
    assert load_workflow(tmp_path / "feed.yaml", registry(), SERVICES).version == "2026.11.1"


# --- errors: file, key path, expectation ------------------------------------------------------------------


def test_bad_yaml_syntax_names_file_line_and_column() -> None:
    error = config_error('workflow: feed\nversion: "1"\nsteps:\n  - {type: rewrite\n')
    assert str(error).startswith("workflows/feed.yaml: line 5, column 1: invalid YAML:")
    assert "expected ',' or '}'" in str(error)


def test_repeated_key_is_rejected_not_silently_overridden() -> None:
    error = config_error('workflow: feed\nversion: "1"\ntimeout_s: 0.3\ntimeout_s: 3\nsteps: [{type: rewrite}]\n')
    assert "line 4, column 1" in error.path
    assert "duplicate key 'timeout_s'" in str(error)


def test_unknown_step_type_lists_the_known_ones() -> None:
    error = config_error(minimal("{type: rewrite}", "{type: rerank}"))
    assert str(error) == (
        "workflows/feed.yaml: steps[1].type: unknown step type 'rerank'; expected one of: "
        "blend, merge, rank, rank.first_pass_order, rewrite, source, stuck"
    )


def test_bad_param_type_names_the_full_key_path_and_the_value() -> None:
    error = config_error(
        minimal(
            "{type: rewrite}",
            "{parallel: {name: sources, branches: [{type: source, name: a}, {type: source, name: b, limit: many}]}}",
        )
    )
    assert str(error).startswith(
        "workflows/feed.yaml: steps[1].parallel.branches[1].limit: Input should be a valid integer"
    )
    assert str(error).endswith("(got 'many')")
    assert (error.source, error.path) == ("workflows/feed.yaml", "steps[1].parallel.branches[1].limit")


def test_unknown_param_lists_params_and_reserved_keys() -> None:
    error = config_error(minimal("{type: source, lmit: 3}"))
    assert error.path == "steps[0].lmit"
    assert error.message == "unknown key; expected one of: limit, broken, type, name, timeout_s, fail_open, fallback"


def test_unknown_top_level_key() -> None:
    error = config_error(minimal("{type: rewrite}") + "timeout: 3\n")
    assert error.path == "timeout"
    assert "expected one of: workflow, version, timeout_s, description, steps" in error.message


def test_missing_steps() -> None:
    error = config_error('workflow: feed\nversion: "1"\n')
    assert str(error) == "workflows/feed.yaml: steps: Field required"


def test_empty_file() -> None:
    assert "expected a mapping with the keys workflow, version, steps" in str(config_error(""))


def test_unquoted_version_and_stringly_flags_are_not_coerced() -> None:
    error = config_error('workflow: feed\nversion: 1.10\nsteps: [{type: rewrite, fail_open: "no"}]\n')
    assert error.path == "version"
    assert "Input should be a valid string (got 1.1)" in error.message
    error = config_error(minimal('{type: rewrite, fail_open: "no"}'))
    assert error.path == "steps[0].fail_open"
    assert "valid boolean" in error.message


def test_booleans_are_yaml_1_2_so_on_is_a_key_and_yes_is_not_a_bool() -> None:
    error = config_error(minimal("{type: rewrite, fail_open: yes}"))
    assert error.path == "steps[0].fail_open"
    assert error.message == "Input should be a valid boolean (got 'yes')"


def test_switch_case_values_must_be_strings() -> None:
    error = config_error(
        minimal("{type: rewrite}", "{switch: {name: s, on: slot.bucket, cases: {1: {type: rewrite}}}}")
    )
    assert error.path == "steps[1].switch.cases.1"
    assert error.message == "Input should be a valid string (got 1)"


def test_bad_policy_values() -> None:
    assert config_error(minimal("{type: rewrite, timeout_s: 0}")).path == "steps[0].timeout_s"
    assert config_error(minimal("{type: rewrite, timeout_s: fast}")).path == "steps[0].timeout_s"


def test_errors_inside_a_fallback_and_a_switch_case_carry_their_path() -> None:
    error = config_error(minimal("{type: rewrite}", "{type: rank, fallback: {type: rank, broken: 3}}"))
    assert error.path == "steps[1].fallback.broken"
    error = config_error(
        minimal("{type: rewrite}", "{switch: {name: s, on: slot.bucket, cases: {b: {type: blend, max_per_author: x}}}}")
    )
    assert error.path == "steps[1].switch.cases.b.max_per_author"


def test_node_shape_errors() -> None:
    both = config_error(minimal("{type: rewrite, sequence: {name: s, steps: [{type: rewrite}]}}"))
    assert (both.path, both.message) == (
        "steps[0]",
        "a node has exactly one of `type`, `parallel`, `switch`, `sequence` (found type, sequence)",
    )
    neither = config_error(minimal("{name: rewrite}"))
    assert neither.path == "steps[0]"
    assert "found keys name" in neither.message
    scalar = config_error(minimal("rewrite"))
    assert (
        scalar.message
        == "expected a step: a mapping with `type` or one of `parallel`, `switch`, `sequence`, got 'rewrite'"
    )
    outside = config_error(minimal("{parallel: {name: p, branches: [{type: rewrite}]}, timeout_s: 1}"))
    assert outside.path == "steps[0].timeout_s"
    assert "go inside it" in outside.message
    no_name = config_error(minimal("{parallel: {branches: [{type: rewrite}]}}"))
    assert (no_name.path, no_name.message) == ("steps[0].parallel.name", "Field required")
    empty = config_error(minimal("{parallel: {name: p, branches: []}}"))
    assert empty.path == "steps[0].parallel.branches"
    assert "at least 1 item" in empty.message


def test_switch_selector_errors() -> None:
    unknown_slot = config_error(minimal("{switch: {name: s, on: slot.bucket, cases: {a: {type: rewrite}}}}"))
    assert unknown_slot.path == "steps[0].switch.on"
    assert "no earlier step writes 'slot.bucket'" in unknown_slot.message
    nonsense = config_error(minimal("{type: rewrite}", "{switch: {name: s, on: bucket, cases: {a: {type: blend}}}}"))
    assert nonsense.path == "steps[1].switch.on"
    assert "expected slot.<key>, request.context.<key> or one of request.count" in nonsense.message


def test_graph_errors_point_at_the_offending_node() -> None:
    missing = config_error(minimal("{type: rewrite}", "{type: rank}"))
    assert str(missing) == "workflows/feed.yaml: steps[1]: step 'rank' reads 'merged', but no earlier step writes it"
    twice = config_error(minimal("{type: rewrite}", "{type: merge, sources: [a]}", "{type: merge, sources: [b]}"))
    assert twice.path == "steps[2]"
    assert "two steps are named 'merge'" in twice.message


def test_required_read_of_a_fail_open_source_points_at_the_reader() -> None:
    text = minimal(
        "{type: rewrite}",
        "{parallel: {name: p, branches: [{type: source, name: net, fail_open: true}]}}",
        "{type: merge, sources: [net]}",
    )
    parse(text)  # merge reads sources optionally: fine
    registry_ = registry()
    registry_.register(
        StepType(
            "strict_merge", StepParams, lambda name, params, services: FuncStep(name, _noop, reads=[source_key("net")])
        )
    )
    with pytest.raises(WorkflowConfigError) as caught:
        parse_workflow(
            text.replace("{type: merge, sources: [net]}", "{type: strict_merge}"), "f.yaml", registry_, SERVICES
        )
    assert caught.value.path == "steps[2]"
    assert "may leave it unwritten" in caught.value.message


async def _noop(ctx: Context) -> None:
    return None


def test_build_failure_of_a_step_type_is_a_config_error() -> None:
    registry_ = registry()

    def explode(name: str, params: StepParams, services: object) -> Any:
        raise ValueError("model 'ranker' is not configured")

    registry_.register(StepType("explode", StepParams, explode))
    with pytest.raises(WorkflowConfigError, match=r"steps\[0\]: cannot build step 'explode'.*not configured"):
        parse_workflow(minimal("{type: explode}"), "f.yaml", registry_, SERVICES)


def test_duplicate_workflow_names_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(minimal("{type: rewrite}"))
    (tmp_path / "b.yaml").write_text(minimal("{type: rewrite}"))
    with pytest.raises(WorkflowConfigError) as caught:
        load_workflows(tmp_path, registry(), SERVICES)
    assert (
        str(caught.value)
        == f"{tmp_path / 'b.yaml'}: workflow: workflow 'feed' is also defined in {tmp_path / 'a.yaml'}"
    )


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(WorkflowConfigError, match="cannot read the file"):
        load_workflow(tmp_path / "nope.yaml", registry(), SERVICES)
    with pytest.raises(WorkflowConfigError, match="not a directory"):
        load_workflows(tmp_path / "nope", registry(), SERVICES)


def test_errors_in_a_loaded_file_name_its_path(tmp_path: Path) -> None:
    path = tmp_path / "feed.yaml"
    path.write_text(minimal("{type: rewrite, bucket: 3}"))
    with pytest.raises(WorkflowConfigError) as caught:
        load_workflow(path, registry(), SERVICES)
    assert str(caught.value).startswith(f"{path}: steps[0].bucket: Input should be a valid string")


def test_a_workflow_that_never_writes_the_answer_is_refused() -> None:
    text = textwrap.dedent(minimal("{type: rewrite}", "{type: source, name: x}", "{type: merge, sources: [x]}"))
    with pytest.raises(WorkflowConfigError, match=r"workflows/jobs\.yaml: steps: workflow 'feed' never writes 'feed'"):
        parse_workflow(text, "workflows/jobs.yaml", registry(), SERVICES, answer=FEED)


def test_a_merge_of_a_source_no_step_writes_is_refused_at_build() -> None:
    error = config_error(minimal("{type: rewrite}", "{type: merge, sources: [nope]}", "{type: rank}", "{type: blend}"))
    assert error.path == "steps[1]"
    assert "optionally reads 'candidates.nope', but no earlier step writes it" in str(error)
