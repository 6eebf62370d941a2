"""Route tables as the admin API reads and changes them: parse, merge, canonical JSON, content version."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping

import yaml
from pydantic import TypeAdapter, ValidationError

from engines.config import RouteConfig
from gateway.config_errors import ConfigProblems, validation_issues, yaml_issue
from gateway.status import invalid_argument

_ROUTES = TypeAdapter(dict[str, RouteConfig])
_SOURCE = "routes"  # how problems name the text a client sent (it has no file name on the server)


def routes_json(routes: Mapping[str, RouteConfig]) -> str:
    """The canonical JSON of a route table: sorted keys, every field explicit."""
    return json.dumps({name: route.model_dump(mode="json") for name, route in routes.items()}, sort_keys=True)


def routes_version(routes: Mapping[str, RouteConfig]) -> str:
    """A content hash of the table: equal tables have equal versions, on any process."""
    return hashlib.sha256(routes_json(routes).encode()).hexdigest()[:16]


def parse_routes(text: str) -> dict[str, RouteConfig]:
    """YAML or JSON (YAML is a superset) mapping route names to RouteConfig; empty text: no routes.

    Raises `RequestRejected(INVALID_ARGUMENT)` whose message has one line per problem, for invalid
    routes `routes: <key path>: <message>` (e.g. `routes: first_pass.targets[0].engine: Field required`).
    """
    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as error:
        where, problem = yaml_issue(error)
        raise invalid_argument(f"routes are not valid YAML/JSON: {f'{where}: ' if where else ''}{problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise invalid_argument(f"routes must be a mapping of logical model name to route, got {type(raw).__name__}")
    try:
        return _ROUTES.validate_python(raw)
    except ValidationError as error:
        raise invalid_argument("\n".join(ConfigProblems.of(_SOURCE, validation_issues(error)).lines())) from None


def merge_routes(
    current: Mapping[str, RouteConfig], updates: Mapping[str, RouteConfig], remove: Collection[str]
) -> dict[str, RouteConfig]:
    """`current` with the `remove` routes dropped and the `updates` set (added or replaced).

    Raises `RequestRejected(INVALID_ARGUMENT)` when a removed route does not exist or a route is both
    set and removed: an ambiguous change is refused whole, never half applied.
    """
    unknown = sorted(set(remove) - current.keys())
    if unknown:
        raise invalid_argument(f"cannot remove routes {unknown}: no such routes; routes: {sorted(current)}")
    both = sorted(set(remove) & updates.keys())
    if both:
        raise invalid_argument(f"routes {both} are both set and removed")
    new = {name: route for name, route in current.items() if name not in remove}
    new.update(updates)
    return new
