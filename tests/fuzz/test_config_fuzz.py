"""Hypothesis over every YAML a user writes: settings files, route tables and workflow files. Each one
either loads or is refused with one line per problem that names the source (and the key path where
there is one); never a traceback, a Python class name or another exception."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config_errors import ConfigProblems, load_settings_checked, problem_lines
from gateway.route_merge import parse_routes
from gateway.settings import GatewaySettings
from gateway.status import RequestRejected
from quasar.demo import feed_product
from remix.dsl import WorkflowConfigError, parse_workflow
from remix.registry import StepParams, StepRegistry, StepType
from remix.steps import builtin_step_types
from remix.testing import FuncStep

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
_LEAK = re.compile(r"Traceback|<class|\.py\b|site-packages|\b[A-Z]\w*(?:Error|Exception)\b")

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["127.0.0.1", "json", "text", "otlp", "none", "onnx", "xgboost", "triton", "-1", "1e9"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=12), st.integers()), inner, max_size=4)
    ),
    max_leaves=12,
)
SETTINGS_KEYS = st.one_of(st.sampled_from(sorted(GatewaySettings.model_fields)), st.text(max_size=16), st.integers())


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """One file rewritten by every example (hypothesis runs many examples per test function)."""
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory) / "settings.yaml"


def assert_one_line_each(lines: list[str], sources: tuple[str, ...]) -> None:
    assert lines
    for line in lines:
        assert "\n" not in line
        assert line.startswith(sources), line
        assert not _LEAK.search(line.replace(sources[0], "")), f"internals in {line!r}"


def check_settings_file(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    try:
        loaded = load_settings_checked(path)
    except ConfigProblems as problems:
        assert_one_line_each(problems.lines(), (f"{path}: ", "QUASAR_* environment"))
    else:
        assert isinstance(loaded, GatewaySettings)


@settings(FUZZ, max_examples=150)
@given(document=st.dictionaries(SETTINGS_KEYS, VALUES, max_size=6))
def test_settings_files_load_or_name_each_problem(scratch: Path, document: dict[Any, Any]) -> None:
    check_settings_file(scratch, yaml.safe_dump(document, allow_unicode=True))


@settings(FUZZ, max_examples=80)
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=100).map(lambda b: b.decode("latin-1"))))
def test_settings_text_of_any_shape(scratch: Path, text: str) -> None:
    check_settings_file(scratch, text)


def route_documents() -> st.SearchStrategy[Any]:
    target = st.fixed_dictionaries(
        {"engine": st.one_of(st.sampled_from(["local_onnx", "local_xgboost"]), st.text(max_size=8))},
        optional={
            "model": st.one_of(st.sampled_from(["first_pass", "feed_ranker"]), VALUES),
            "weight": VALUES,
            "timeout_s": VALUES,
            "breaker": VALUES,
            "colour": VALUES,
        },
    )
    route = st.fixed_dictionaries(
        {},
        optional={"targets": st.one_of(st.lists(target, max_size=3), VALUES), "fallback": VALUES, "shadow": VALUES},
    )
    return st.one_of(st.dictionaries(st.text(max_size=12), st.one_of(route, VALUES), max_size=3), VALUES)


@settings(FUZZ, max_examples=150)
@given(text=st.one_of(route_documents().map(lambda d: yaml.safe_dump(d, allow_unicode=True)), st.text(max_size=120)))
def test_route_tables_parse_or_name_each_problem(text: str) -> None:
    try:
        routes: dict[str, object] | RequestRejected = dict(parse_routes(text))
    except RequestRejected as rejected:
        routes = rejected
    if isinstance(routes, RequestRejected):
        assert routes.code.name == "INVALID_ARGUMENT"
        assert_one_line_each(str(routes).splitlines(), ("routes",))


def inert_registry() -> StepRegistry:
    """The built-in step types' names and parameter models, each building a step that does nothing: the
    DSL and every parameter model are exercised without the collaborators real steps are built with."""

    def build(name: str, params: StepParams, services: Any) -> FuncStep:
        async def nothing(ctx: Any) -> None:
            return None

        return FuncStep(name, nothing)

    return StepRegistry([StepType(t.type_name, t.params, build) for t in builtin_step_types()])


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from _paths(child, (*path, key))


@st.composite
def mutated_workflows(draw: st.DrawFn) -> str:
    """The demo world's feed workflow with a few keys deleted, replaced or added anywhere in it."""
    document = feed_product.workflow_document()
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(document))))
        parent: Any = document
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            document = draw(VALUES) if action == "replace" else document
        elif action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.text(max_size=10))] = draw(VALUES)
    return yaml.safe_dump(document, allow_unicode=True)


@settings(FUZZ, max_examples=150)
@given(text=st.one_of(mutated_workflows(), st.text(max_size=120)))
def test_workflow_files_load_or_name_each_problem(text: str) -> None:
    source = "workflows/feed.yaml"
    try:
        workflow: Any = parse_workflow(text, source, inert_registry(), None)
    except WorkflowConfigError as error:
        workflow = error
    if isinstance(workflow, WorkflowConfigError):
        lines = problem_lines(workflow)  # what `quasar serve` prints
        assert lines is not None
        assert len(lines) == len(workflow.issues), "one line per problem"
        assert_one_line_each(lines, (f"{source}: ",))


def test_the_unmutated_workflow_loads() -> None:
    """The fuzzing above starts from a valid workflow, so mutants near it explore both outcomes."""
    text = yaml.safe_dump(feed_product.workflow_document())
    assert parse_workflow(text, "feed.yaml", inert_registry(), None).name == "feed"
