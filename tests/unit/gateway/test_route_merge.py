"""Route tables sent to the admin API: parsed with one line per problem, merged all or nothing."""

from __future__ import annotations

import pytest

from engines.config import RouteConfig
from gateway.route_merge import merge_routes, parse_routes, routes_version
from gateway.status import RequestRejected

A = RouteConfig.model_validate({"targets": [{"engine": "a", "model": "m"}]})
B = RouteConfig.model_validate({"targets": [{"engine": "b", "model": "m"}]})


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        (
            "r: {targets: [{engine: a}], colour: red}",
            [
                "routes: r.targets[0].model: Field required",
                "routes: r.colour: unknown key (Extra inputs are not permitted)",
            ],
        ),
        ("r: {targets: 3}", ["routes: r.targets: Input should be a valid list (got 3)"]),
        ("r: [1]", ["routes: r: expected a mapping, got a list"]),
        (
            "r: {targets: [\n",
            [
                "routes are not valid YAML/JSON: line 2, column 1: while parsing a flow node "
                "expected the node content, but found '<stream end>'"
            ],
        ),
        ("- r", ["routes must be a mapping of logical model name to route, got list"]),
    ],
)
def test_bad_routes_name_each_problem_in_one_line(text: str, lines: list[str]) -> None:
    with pytest.raises(RequestRejected) as raised:
        parse_routes(text)
    assert raised.value.code.name == "INVALID_ARGUMENT"
    assert str(raised.value).splitlines() == lines


def test_empty_text_is_no_routes() -> None:
    assert parse_routes("") == {}
    assert parse_routes("# nothing\n") == {}


def test_merge_sets_and_removes_in_one_table() -> None:
    assert merge_routes({"r": A, "s": A}, {"r": B}, ["s"]) == {"r": B}
    with pytest.raises(RequestRejected, match=r"cannot remove routes \['t'\]: no such routes"):
        merge_routes({"r": A}, {}, ["t"])
    with pytest.raises(RequestRejected, match=r"routes \['r'\] are both set and removed"):
        merge_routes({"r": A}, {"r": B}, ["r"])


def test_equal_tables_have_equal_versions() -> None:
    assert routes_version({"r": A}) == routes_version({"r": RouteConfig.model_validate(A.model_dump())})
    assert routes_version({"r": A}) != routes_version({"r": B})
